package rooms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"testing"
)

// TestReserveNames: once a verified author has posted under a name in a
// room, an unverified post under that name, folded as a reader would
// confuse it, is refused there when ReserveNames is set, and nowhere else.
func TestReserveNames(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	if _, _, err := m.Submit("lobby", Post{User: "alice", Text: "before", ReserveNames: true}); err != nil {
		t.Fatalf("unverified alice before any verified one: %v", err)
	}
	if msg, _, err := m.Submit("lobby", Post{User: "alice", Text: "signed in", Verified: true}); err != nil || !msg.Verified {
		t.Fatalf("verified alice: %+v, %v", msg, err)
	}
	tests := []struct {
		name    string
		room    string
		post    Post
		wantErr error
	}{
		{"same name", "lobby", Post{User: "alice", ReserveNames: true}, ErrNameReserved},
		{"other case and spaces", "lobby", Post{User: "  ALICE ", ReserveNames: true}, ErrNameReserved},
		{"spaces between words", "lobby", Post{User: "Alice  Smith", Verified: true}, nil},
		{"spaces between words, unverified", "lobby", Post{User: "alice smith", ReserveNames: true}, ErrNameReserved},
		{"another name", "lobby", Post{User: "alicia", ReserveNames: true}, nil},
		{"grapheme joiner", "lobby", Post{User: "alice\u034f", ReserveNames: true}, ErrNameReserved},
		{"variation selector", "lobby", Post{User: "alice\ufe0f", ReserveNames: true}, ErrNameReserved},
		{"Hangul filler", "lobby", Post{User: "\u3164alice", ReserveNames: true}, ErrNameReserved},
		{"halfwidth Hangul filler", "lobby", Post{User: "ali\uffa0ce", ReserveNames: true}, ErrNameReserved},
		{"zero-width space", "lobby", Post{User: "al\u200bice", ReserveNames: true}, ErrNameReserved},
		{"bidi control", "lobby", Post{User: "\u202dalice\u202c", ReserveNames: true}, ErrNameReserved},
		{"tag characters", "lobby", Post{User: "alice\U000e0041\U000e007f", ReserveNames: true}, ErrNameReserved},
		{"blank braille pattern", "lobby", Post{User: "\u2800alice", ReserveNames: true}, ErrNameReserved},
		{"a visible mark", "lobby", Post{User: "alice\u0301", ReserveNames: true}, nil},
		{"verified again", "lobby", Post{User: "alice", Verified: true, ReserveNames: true}, nil},
		{"without ReserveNames", "lobby", Post{User: "alice"}, nil},
		{"another room", "hall", Post{User: "alice", ReserveNames: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := lastID(m, tt.room)
			tt.post.Text = tt.name
			msg, _, err := m.Submit(tt.room, tt.post)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil && lastID(m, tt.room) != before {
				t.Error("a refused post was stored")
			}
			if err == nil && msg.Verified != tt.post.Verified {
				t.Errorf("verified %v, want %v", msg.Verified, tt.post.Verified)
			}
		})
	}
	// The names go with the room.
	if err := m.Delete("lobby"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Submit("lobby", Post{User: "alice", Text: "new room", ReserveNames: true}); err != nil {
		t.Errorf("alice in a room made anew: %v", err)
	}
}

// TestFoldName: names fold as a reader confuses them: case, spaces, and
// code points that show nothing; visible differences stay.
func TestFoldName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"Alice", "alice"},
		{"  Alice   Smith ", "alice smith"},
		{"alice\u00a0smith", "alice smith"},
		{"alice\u3000smith", "alice smith"},
		{"alice\u034f", "alice"},
		{"alice\ufe0f", "alice"},
		{"alice\U000e0100", "alice"},
		{"alice\u180b", "alice"},
		{"\u115f\u1160alice", "alice"},
		{"\u3164alice\uffa0", "alice"},
		{"a\u200bl\u200ci\u200dc\u2060e\ufeff", "alice"},
		{"\u202ealice\u2066\u2069\u200e\u200f", "alice"},
		{"alice\U000e0001\U000e0061\U000e007f", "alice"},
		{"alice\u00ad", "alice"},
		{"\u2800alice\u2800\u2800smith", "alice smith"},
		{"alice \u200b smith", "alice smith"},
		{"\u3164", ""},
		{"\u034f \ufe0f", ""},
		{"alice\u0301", "alic\u00e9"}, // a combining accent composes: it shows
		{"Zoe\u0308", "zo\u00eb"},     // as the precomposed spelling does
		{"Zo\u00eb", "zo\u00eb"},
		{"\uff21\uff2c\uff29\uff23\uff25", "alice"}, // fullwidth
		{"\ufb01sh", "fish"},                        // a ligature
		{"аlice", "аlice"},                          // Cyrillic а: a lookalike, not folded
		{"👍\ufe0f", "👍"},
	}
	for _, tt := range tests {
		if got := FoldName(tt.name); got != tt.want {
			t.Errorf("FoldName(%+q) = %+q, want %+q", tt.name, got, tt.want)
		}
		if got, want := nameHash(tt.name), nameHash(tt.want); got != want {
			t.Errorf("nameHash(%+q) differs from nameHash(%+q)", tt.name, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { nameHash("\u3164 Alice\u034f  Smi\u0308th \uff21") }); n != 0 {
		t.Errorf("nameHash allocates %v times, want 0", n)
	}
}

func lastID(m *Manager, room string) string {
	for _, info := range m.Rooms() {
		if info.Name == room {
			return info.LastID
		}
	}
	return ""
}

// TestNamesBounded: a room remembers at most MaxNames verified names,
// forgetting the one whose author posted least recently.
func TestNamesBounded(t *testing.T) {
	m := newManager(t, Config{MaxNames: 3})
	for _, user := range []string{"a", "b", "c", "a", "d"} {
		if _, _, err := m.Submit("lobby", Post{User: user, Text: "x", Verified: true}); err != nil {
			t.Fatal(err)
		}
	}
	m.withRoom("lobby", false, func(r *room) error {
		if len(r.verified) != 3 {
			t.Errorf("%d names remembered, want 3", len(r.verified))
		}
		return nil
	})
	for user, wantErr := range map[string]error{"a": ErrNameReserved, "b": nil, "c": ErrNameReserved, "d": ErrNameReserved} {
		if _, _, err := m.Submit("lobby", Post{User: user, Text: "x", ReserveNames: true}); !errors.Is(err, wantErr) {
			t.Errorf("unverified %q: %v, want %v", user, err, wantErr)
		}
	}
}

// TestAdmit: Admit is asked only for a post that would be stored, after the
// repeat lookup and the name check, and its refusal stores nothing.
func TestAdmit(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	refuse := errors.New("rate limited")
	asked := 0
	admit := func(err error) func() error {
		return func() error { asked++; return err }
	}
	first := Post{User: "alice", Text: "hi", Key: "k", Scope: "s", Admit: admit(nil)}
	stored, _, err := m.Submit("lobby", first)
	if err != nil || asked != 1 {
		t.Fatalf("first post: %v, Admit asked %d times", err, asked)
	}
	m.Submit("lobby", Post{User: "bob", Text: "verified", Verified: true})
	tests := []struct {
		name      string
		post      Post
		wantErr   error
		wantAsked bool
	}{
		{"repeat", first, nil, false},
		{"key reused", Post{User: "alice", Text: "other", Key: "k", Scope: "s"}, ErrKeyReused, false},
		{"name reserved", Post{User: "bob", Text: "x", ReserveNames: true}, ErrNameReserved, false},
		{"new post, refused", Post{User: "alice", Text: "more", Key: "k2", Scope: "s"}, refuse, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asked = 0
			before := lastID(m, "lobby")
			tt.post.Admit = admit(refuse)
			msg, _, err := m.Submit("lobby", tt.post)
			if !errors.Is(err, tt.wantErr) || (asked == 1) != tt.wantAsked {
				t.Errorf("err %v, Admit asked %d times; want %v, asked %v", err, asked, tt.wantErr, tt.wantAsked)
			}
			if lastID(m, "lobby") != before {
				t.Error("a message was stored")
			}
			if tt.wantErr == nil && msg != stored {
				t.Errorf("repeat answered %+v, want %+v", msg, stored)
			}
		})
	}
	// A key whose post Admit refused was never used: its retry is new.
	if _, repeat, err := m.Submit("lobby", Post{User: "alice", Text: "more", Key: "k2", Scope: "s"}); err != nil || repeat {
		t.Errorf("retry of a refused post: repeat=%v err=%v; want it stored", repeat, err)
	}
	// A refused post to a new room leaves no room behind: refused posts
	// cannot fill MaxRooms.
	if _, _, err := m.Submit("new", Post{User: "alice", Text: "x", Admit: admit(refuse)}); !errors.Is(err, refuse) || m.Len() != 1 {
		t.Errorf("refused post to a new room: %v, %d rooms; want %v, 1 room", err, m.Len(), refuse)
	}
	asked = 0
	if _, _, err := m.Submit("new", Post{User: "alice", Text: "x", Admit: admit(nil)}); err != nil || asked != 1 || m.Len() != 2 {
		t.Errorf("admitted post to a new room: %v, Admit asked %d times, %d rooms; want it stored, asked once, 2 rooms", err, asked, m.Len())
	}
}

// TestVerifiedOnTheWire: the flag is in the JSON of a message, in its
// stream frame and in history, and round-trips.
func TestVerifiedOnTheWire(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	s, err := m.Subscribe("lobby", Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, verified := range []bool{true, false} {
		msg, _, err := m.Submit("lobby", Post{User: "alice", Text: "hi", Verified: verified})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`"verified":%v}`, verified)
		events, err := s.Take(nil)
		if err != nil || len(events) != 1 || !bytes.Contains(events[0].JSON(), []byte(want)) {
			t.Errorf("events %v (%v), want one whose JSON has %s", events, err, want)
		}
		b, _ := json.Marshal(msg)
		var back Message
		if err := json.Unmarshal(b, &back); err != nil || back != msg || !bytes.Contains(b, []byte(want)) {
			t.Errorf("JSON %s round-trips to %+v (%v), want %+v", b, back, err, msg)
		}
		rep, _ := m.Messages("lobby", "", "", 1)
		if len(rep.Messages) != 1 || rep.Messages[0].Verified != verified {
			t.Errorf("history %+v, want verified=%v", rep.Messages, verified)
		}
	}
}

// BenchmarkNameMemory reports the heap one room's full set of verified
// names holds, per name.
func BenchmarkNameMemory(b *testing.B) {
	for b.Loop() {
		m := New(Config{History: 0, Buffer: 1})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range DefaultMaxNames {
			if _, _, err := m.Submit("lobby", Post{User: fmt.Sprintf("%064d", i), Text: "x", Verified: true}); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/DefaultMaxNames, "B/name")
		m.Close()
	}
}
