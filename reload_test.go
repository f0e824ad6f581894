package chat

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// TestReloadKeepsHistory: a reload ends open streams at once instead of
// waiting on them, and keeps every room's history and id sequence, so a
// client that resumes with its last id misses nothing.
func TestReloadKeepsHistory(t *testing.T) {
	before := config{global: "history 100\n heartbeat 15s", handler: "max_message_size 1KiB"}
	after := config{global: "history 200\n heartbeat 20s", handler: "max_message_size 2KiB"}
	startCaddy(t, before)
	room := roomFor(t, "a")
	s := openStream(t, rootSite+"/stream/"+room)
	var posted []rooms.Message
	for i := range 3 {
		posted = append(posted, postJSON(t, rootSite, room, "alice", fmt.Sprint(i)))
	}
	seen := s.messages(t, 3)

	took := reload(t, after)
	if took > 3*time.Second {
		t.Errorf("reload took %v with a stream open", took)
	}
	s.endWithin(t, 2*time.Second) // the old config's stream ends at once

	posted = append(posted, postJSON(t, rootSite, room, "alice", "after reload"))
	epoch0, _, _ := rooms.ParseID(posted[0].ID)
	epoch3, seq3, _ := rooms.ParseID(posted[3].ID)
	if epoch3 != epoch0 || seq3 != 4 {
		t.Errorf("id after reload %q, want the same epoch as %q and sequence 4", posted[3].ID, posted[0].ID)
	}
	back := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", seen[2].ID)
	if got := back.messages(t, 1); got[0].ID != posted[3].ID {
		t.Errorf("resumed stream got %q, want only the message posted after the reload", got[0].Message)
	}
	resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "")
	if resp.status != http.StatusOK || len(resp.json["messages"].([]any)) != 4 {
		t.Errorf("history after reload: %d %s, want all 4 messages", resp.status, resp.body)
	}
	// The new handler config is in force.
	big := do(t, "POST", rootSite+"/submit", fmt.Sprintf(`{"room":%q,"message":%q}`, room, strings.Repeat("x", 1500)), "Content-Type", "application/json")
	if big.status != http.StatusCreated {
		t.Errorf("1500-byte message after raising the limit to 2KiB: %d %s", big.status, big.body)
	}
}
