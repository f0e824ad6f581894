package rooms

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Message is one chat message, as stored, returned and streamed.
type Message struct {
	ID      string
	Room    string
	User    string
	Message string
	Time    time.Time
	// Verified is set when the author was authenticated: User came from
	// the site's auth, not from the request.
	Verified bool
}

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
}

// MarshalJSON encodes m on one line, as the stream's data field requires.
func (m Message) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireMessage{m.ID, m.Room, m.User, m.Message, m.Time.UTC().Format(TimeLayout), m.Verified})
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
