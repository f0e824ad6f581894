package rooms

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPresenceCounts: each named user counts its streams, the rest are
// anonymous, and a user is gone with its last stream.
func TestPresenceCounts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		open  []string // users of the streams opened, "" anonymous
		close []int    // indexes in open of the streams then closed
		want  string
	}{
		{"nobody", nil, nil, "anonymous=0"},
		{"anonymous", []string{"", ""}, nil, "anonymous=2"},
		{"named", []string{"bob", "alice", "bob", ""}, nil, "alice:1 bob:2 anonymous=1"},
		{"one of two streams closed", []string{"bob", "bob"}, []int{0}, "bob:1 anonymous=0"},
		{"last stream closed", []string{"bob", "alice"}, []int{0}, "alice:1 anonymous=0"},
		{"anonymous closed", []string{"", "alice"}, []int{0}, "alice:1 anonymous=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Config{History: 10, Buffer: 10})
			defer m.Close()
			var subs []*Subscription
			for _, user := range tc.open {
				s, err := m.Subscribe("lobby", Position{User: user}, nil)
				if err != nil {
					t.Fatal(err)
				}
				subs = append(subs, s)
			}
			for _, i := range tc.close {
				subs[i].Close()
			}
			p, err := m.Presence("lobby")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range p.Users {
				got = append(got, fmt.Sprintf("%s:%d", u.User, u.Streams))
			}
			got = append(got, fmt.Sprintf("anonymous=%d", p.Anonymous))
			if s := strings.Join(got, " "); s != tc.want {
				t.Errorf("presence %s, want %s", s, tc.want)
			}
		})
	}
}

// nextPresence waits for the subscription's next presence event and
// returns its JSON.
func nextPresence(t *testing.T, s *Subscription) string {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		events, err := s.Take(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Kind == EventPresence {
				return string(e.JSON())
			}
		}
		select {
		case <-s.Ready():
		case <-deadline:
			t.Fatal("no presence event within 3s")
		}
	}
}

// TestPresenceEvents: a watcher hears who was announced, then changes,
// coalesced; a user who came and went between two events is never
// announced.
func TestPresenceEvents(t *testing.T) {
	m := New(Config{History: 10, Buffer: 10})
	defer m.Close()
	open := func(pos Position) *Subscription {
		s, err := m.Subscribe("lobby", pos, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	w := open(Position{User: "alice", WatchPresence: true})
	if got := nextPresence(t, w); got != `{"joined":[],"left":[]}` {
		t.Errorf("first event %s, want nobody yet", got)
	}
	if got := nextPresence(t, w); got != `{"joined":["alice"],"left":[]}` {
		t.Errorf("after alice joined: %s", got)
	}
	first := time.Now()
	open(Position{User: "bob"})
	ghost := open(Position{User: "ghost"})
	ghost.Close()
	open(Position{}) // anonymous: no event
	if got := nextPresence(t, w); got != `{"joined":["bob"],"left":[]}` {
		t.Errorf("after bob came and ghost came and went: %s", got)
	}
	if d := time.Since(first); d < 800*time.Millisecond || d > 2*time.Second {
		t.Errorf("the second event came %v after the first, want about %v", d, PresenceInterval)
	}
	late := open(Position{WatchPresence: true})
	if got := nextPresence(t, late); got != `{"joined":["alice","bob"],"left":[]}` {
		t.Errorf("a late watcher first hears %s", got)
	}
}

// TestPresenceReservedName: a stream that claims, unverified, a name a
// verified author has posted under counts as anonymous where its post would
// be refused, and as the name where names are not reserved or it is the
// verified author.
func TestPresenceReservedName(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	if _, _, err := m.Submit("lobby", Post{User: "alice", Text: "hi", Verified: true}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		pos  Position
		want string
	}{
		{"impostor", Position{User: "alice", ReserveNames: true}, `{"users":[],"anonymous":1}`},
		{"names not reserved", Position{User: "alice"}, `{"users":[{"user":"alice","streams":1}],"anonymous":0}`},
		{"alice herself", Position{User: "alice", UserVerified: true, ReserveNames: true}, `{"users":[{"user":"alice","streams":1}],"anonymous":0}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := m.Subscribe("lobby", tt.pos, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			p, err := m.Presence("lobby")
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := json.Marshal(p); string(got) != tt.want {
				t.Errorf("presence %s, want %s", got, tt.want)
			}
		})
	}
}
