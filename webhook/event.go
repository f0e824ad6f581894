package webhook

import (
	"encoding/json"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Event is one event of a batch, as the receiver reads it.
type Event struct {
	Type string `json:"type"`
	Room string `json:"room"`
	// ID names the event: a log entry's id, the same on every retry and
	// every node, so that a receiver can drop a duplicate.
	ID   string          `json:"id"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data"`

	// once, when set, names the event among the nodes that share the
	// store: only the node that leases it first sends it.
	once string
}

// Batch is the body of a POST.
type Batch struct {
	Events []Event `json:"events"`
}

// Users is the data of join and leave events.
type Users struct {
	Users []string `json:"users"`
}

// Dropped is the data of a room_dropped event.
type Dropped struct {
	Reason string `json:"reason"`
}

// entryEvent returns the event of a log entry: a message (a deleted one as
// its tombstone), an edit or a delete, with the JSON that the room's
// streams carry as its data.
func entryEvent(room string, m rooms.Message) Event {
	ev := rooms.MessageEvent(m)
	return Event{Type: ev.Kind.String(), Room: room, ID: m.ID, Time: m.Time, Data: ev.JSON()}
}

// dataOf encodes v, a struct of strings, as an event's data.
func dataOf(v any) json.RawMessage {
	data, _ := json.Marshal(v) // cannot fail: strings and times
	return data
}
