package rooms

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Message is one entry of a room's log, as stored, returned and streamed:
// a chat message, or, with Action set, an action on one. An action takes
// its id in the room's sequence like a message, so that resuming, replay
// and the order across nodes hold for it unchanged.
type Message struct {
	ID      string
	Room    string
	User    string
	Message string
	Time    time.Time
	// Verified is set when the author was authenticated: User came from
	// the site's auth, not from the request.
	Verified bool
	// Edited is when the message's text was last replaced by an edit,
	// zero when never.
	Edited time.Time
	// Deleted marks what a delete erased: the message, kept as a
	// tombstone without its text so that its id still counts in the
	// sequence, and the edits of it, without theirs.
	Deleted bool

	// Action makes the entry an action on the message whose id is
	// Target: for an edit, Message is the new text; ByModerator tells a
	// moderator's delete from its author's.
	Action      Action
	Target      string
	ByModerator bool

	// Author is what the server keeps to recognise the author later. It
	// is never published: no encoding of a message or event carries it.
	Author Authorship
}

// Authorship is what a store keeps with a message, for the server's eyes
// only, to tell whether a later caller is its author.
type Authorship struct {
	// ClientKey names the client that posted it, as the caller gave it
	// (such as its address, an IPv6 client by its /64).
	ClientKey string
	// SecretDigest is SecretDigest of the secret handed to the author
	// with the answer to the post, "" for none.
	SecretDigest string
}

// Action is what an action entry does to its target.
type Action uint8

// The actions.
const (
	// ActionEdit replaces the target's text.
	ActionEdit Action = iota + 1
	// ActionDelete erases the target.
	ActionDelete
)

// By names who did a delete: "moderator" or "author".
func (m *Message) By() string {
	if m.ByModerator {
		return "moderator"
	}
	return "author"
}

// IsAction reports whether m is an action rather than a message.
func (m *Message) IsAction() bool { return m.Action != 0 }

// TimeLayout is how a message's time is written: RFC 3339 in UTC with
// exactly three fractional digits, so that times sort as strings and every
// client parses them alike.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// wireMessage is Message's JSON form.
type wireMessage struct {
	ID       string `json:"id"`
	Room     string `json:"room"`
	User     string `json:"user"`
	Message  string `json:"message"`
	Time     string `json:"time"`
	Verified bool   `json:"verified"`
	// Edited is left out of a message never edited, so that such a
	// message reads as it did before edits existed.
	Edited string `json:"edited,omitempty"`
}

// MarshalJSON encodes m on one line, as the stream's data field requires.
func (m Message) MarshalJSON() ([]byte, error) {
	w := wireMessage{m.ID, m.Room, m.User, m.Message, m.Time.UTC().Format(TimeLayout), m.Verified, ""}
	if !m.Edited.IsZero() {
		w.Edited = m.Edited.UTC().Format(TimeLayout)
	}
	return json.Marshal(w)
}

// actionJSON is an action's JSON form: an edit carries Message, a delete
// By.
type actionJSON struct {
	ID      string  `json:"id"`
	Target  string  `json:"target"`
	By      string  `json:"by,omitempty"`
	Message *string `json:"message,omitempty"`
	Time    string  `json:"time"`
}

// marshalAction encodes the action m on one line.
func marshalAction(m *Message) []byte {
	a := actionJSON{ID: m.ID, Target: m.Target, Time: m.Time.UTC().Format(TimeLayout)}
	switch m.Action {
	case ActionEdit:
		a.Message = &m.Message
	case ActionDelete:
		a.By = m.By()
	}
	b, _ := json.Marshal(a) // strings only: it cannot fail
	return b
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (m *Message) UnmarshalJSON(b []byte) error {
	var w wireMessage
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return err
	}
	*m = Message{ID: w.ID, Room: w.Room, User: w.User, Message: w.Message, Time: t, Verified: w.Verified}
	if w.Edited != "" {
		if m.Edited, err = time.Parse(time.RFC3339Nano, w.Edited); err != nil {
			return err
		}
	}
	return nil
}

// marshalOldest is the JSON of a reset: the oldest id retained.
func marshalOldest(oldest string) []byte {
	b, _ := json.Marshal(struct {
		Oldest string `json:"oldest"`
	}{oldest}) // a string only: it cannot fail
	return b
}

// FormatID returns the id of message seq in a room of the given epoch.
func FormatID(epoch string, seq uint64) string {
	return epoch + "-" + strconv.FormatUint(seq, 10)
}

// ParseID splits an id made by FormatID. ok is false for anything else,
// including sequence 0, which no message has.
func ParseID(id string) (epoch string, seq uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 || len(id) > 64 {
		return "", 0, false
	}
	digits := id[i+1:]
	if digits[0] == '0' {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return "", 0, false
	}
	return id[:i], seq, true
}

// ValidName reports whether name can name a room: 1 to 64 of A-Z a-z 0-9 . _ -,
// starting with a letter or digit. Such a name is safe in a URL path segment,
// a file name and a Redis key alike.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 64 || !isAlnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
