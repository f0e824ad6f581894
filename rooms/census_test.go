package rooms

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCensus is a memory store whose other processes are whatever the test
// says, and whose directory holds the rooms the test names.
type fakeCensus struct {
	*LocalStore
	mu        sync.Mutex
	others    map[string]Headcount
	reported  map[string]Headcount
	directory map[string]string
}

func (f *fakeCensus) Exchange(_ context.Context, here map[string]Headcount) (map[string]Headcount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reported = here
	return f.others, nil
}

func (f *fakeCensus) Leave(context.Context) error { return nil }

func (f *fakeCensus) Directory(context.Context) (map[string]string, error) {
	return f.directory, nil
}

func (f *fakeCensus) set(others map[string]Headcount) {
	f.mu.Lock()
	f.others = others
	f.mu.Unlock()
}

// waitCensus waits for two exchanges, so that the Manager holds what the
// store returns now.
func waitCensus() { time.Sleep(3 * CensusInterval) }

// TestCensusMerges: listings and presence add what the other processes
// report to this one's streams, counting a user present in both once.
func TestCensusMerges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		here      []string // users of the streams opened here in lobby, "" anonymous
		others    map[string]Headcount
		directory map[string]string
		presence  string // of lobby
		rooms     string
	}{
		{
			name:     "alone",
			here:     []string{"alice", ""},
			presence: "alice:1 anonymous=1",
			rooms:    "lobby:2/1/",
		},
		{
			name:     "same user on both",
			here:     []string{"alice", ""},
			others:   map[string]Headcount{"lobby": {Subscribers: 4, Anonymous: 1, Users: map[string]int{"alice": 2, "bob": 1}}},
			presence: "alice:3 bob:1 anonymous=2",
			rooms:    "lobby:6/2/",
		},
		{
			name:     "a room open only elsewhere",
			others:   map[string]Headcount{"lobby": {Subscribers: 1, Users: map[string]int{"bob": 1}}},
			presence: "bob:1 anonymous=0",
			rooms:    "lobby:1/1/",
		},
		{
			name:      "a room no process has open",
			here:      []string{"alice"},
			directory: map[string]string{"kept": "e-9", "lobby": "e-1"},
			presence:  "alice:1 anonymous=0",
			rooms:     "kept:0/0/e-9 lobby:1/1/e-1",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &fakeCensus{LocalStore: NewMemoryStore(), others: tc.others, directory: tc.directory}
			m := New(Config{History: 10, Buffer: 10, Store: store})
			defer m.Close()
			for _, user := range tc.here {
				s, err := m.Subscribe("lobby", Position{User: user}, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			}
			waitCensus()
			p, err := m.Presence("lobby")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range p.Users {
				got = append(got, fmt.Sprintf("%s:%d", u.User, u.Streams))
			}
			if s := strings.Join(append(got, fmt.Sprintf("anonymous=%d", p.Anonymous)), " "); s != tc.presence {
				t.Errorf("presence %s, want %s", s, tc.presence)
			}
			got = nil
			for _, r := range m.Rooms() {
				got = append(got, fmt.Sprintf("%s:%d/%d/%s", r.Name, r.Subscribers, r.Users, r.LastID))
			}
			if s := strings.Join(got, " "); s != tc.rooms {
				t.Errorf("rooms %s, want %s", s, tc.rooms)
			}
			store.mu.Lock()
			reported := store.reported["lobby"]
			store.mu.Unlock()
			if reported.Subscribers != len(tc.here) {
				t.Errorf("reported %d subscribers of lobby, want %d", reported.Subscribers, len(tc.here))
			}
		})
	}
}

// TestCensusPresenceEvents: users who come and go in other processes are
// announced as this process's own are; one present here too is not.
func TestCensusPresenceEvents(t *testing.T) {
	store := &fakeCensus{LocalStore: NewMemoryStore()}
	m := New(Config{History: 10, Buffer: 10, Store: store})
	defer m.Close()
	watcher, err := m.Subscribe("lobby", Position{User: "alice", WatchPresence: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	for i, step := range []struct {
		others map[string]int
		want   string
	}{
		{nil, `{"joined":[],"left":[]}`},
		{nil, `{"joined":["alice"],"left":[]}`},
		{map[string]int{"alice": 1, "bob": 2}, `{"joined":["bob"],"left":[]}`},
		{map[string]int{"alice": 1, "carol": 1}, `{"joined":["carol"],"left":["bob"]}`},
		{nil, `{"joined":[],"left":["carol"]}`},
	} {
		store.set(map[string]Headcount{"lobby": {Users: step.others}})
		if got := nextPresence(t, watcher); got != step.want {
			t.Fatalf("step %d: presence event %s, want %s", i, got, step.want)
		}
	}
}

// TestALetGoRoomAnnouncesOnlyItsOwnLeaves: as a room is let go here with
// its last stream, its users are announced as left, but not one whose
// stream another process holds.
func TestALetGoRoomAnnouncesOnlyItsOwnLeaves(t *testing.T) {
	var mu sync.Mutex
	var left []string
	store := &fakeCensus{LocalStore: NewMemoryStore()}
	store.set(map[string]Headcount{"lobby": {Users: map[string]int{"bob": 1}}})
	m := New(Config{History: 10, Buffer: 10, Store: store, Hooks: Hooks{
		Presence: func(_ string, c PresenceChange) {
			mu.Lock()
			left = append(left, c.Left...)
			mu.Unlock()
		},
	}})
	defer m.Close()
	alice, err := m.Subscribe("lobby", Position{User: "alice"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitCensus()
	time.Sleep(2 * PresenceInterval) // alice and bob are announced
	alice.Close()
	time.Sleep(2 * PresenceInterval)
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(left, ",") != "alice" {
		t.Errorf("leaves announced as alice's room was let go: %v, want alice's alone: bob is still in it elsewhere", left)
	}
}

// BenchmarkCensusTick measures what one census tick costs the Manager of
// 10,000 rooms with three named streams each, the store aside: taking the
// headcounts and the other processes' news to every room.
func BenchmarkCensusTick(b *testing.B) {
	m := New(Config{History: 10, Buffer: 10, Store: &fakeCensus{LocalStore: NewMemoryStore()}})
	defer m.Close()
	for i := range 10000 {
		for _, user := range []string{"alice", "bob", "carol"} {
			s, err := m.Subscribe(fmt.Sprint("room", i), Position{User: user}, func() {})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
		}
	}
	others := map[string]Headcount{"room0": {Subscribers: 1, Users: map[string]int{"dave": 1}}}
	b.ResetTimer()
	for range b.N {
		_ = m.headcounts()
		for _, r := range m.snapshot() {
			r.mu.Lock()
			r.setOthers(others[r.name])
			r.mu.Unlock()
		}
	}
}
