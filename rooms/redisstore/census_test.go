package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// presenceOf renders a room's presence as "alice:2 bob:1 anonymous=3".
func presenceOf(t *testing.T, m *rooms.Manager, room string) string {
	t.Helper()
	p, err := m.Presence(room)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, u := range p.Users {
		out = append(out, fmt.Sprintf("%s:%d", u.User, u.Streams))
	}
	return strings.Join(append(out, fmt.Sprintf("anonymous=%d", p.Anonymous)), " ")
}

// roomsOf renders a node's room list as "lobby:3/2 ..." (subscribers/users).
func roomsOf(m *rooms.Manager) string {
	var out []string
	for _, r := range m.Rooms() {
		out = append(out, fmt.Sprintf("%s:%d/%d", r.Name, r.Subscribers, r.Users))
	}
	return strings.Join(out, " ")
}

// eventually fails the test unless f returns want within 3 s.
func eventually(t *testing.T, what string, want string, f func() string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := f()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q, want %q within 3s", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func subscribe(t *testing.T, m *rooms.Manager, room, user string, watch bool) *rooms.Subscription {
	t.Helper()
	s, err := m.Subscribe(room, rooms.Position{User: user, WatchPresence: watch}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// nextPresence waits for the subscription's next presence event's data.
func nextPresence(t *testing.T, s *rooms.Subscription, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		events, err := s.Take(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Kind == rooms.EventPresence {
				return string(e.JSON())
			}
		}
		select {
		case <-s.Ready():
		case <-deadline:
			t.Fatalf("no presence event within %v", within)
		}
	}
}

// TestCensusAcrossNodes: room listings and presence sum the streams of
// every node, presence events announce users of the other node, and a node
// that closes drops out at once.
func TestCensusAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})

	watcher := subscribe(t, a, "lobby", "alice", true)
	if got := nextPresence(t, watcher, time.Second); got != `{"joined":[],"left":[]}` {
		t.Fatalf("first presence event %s", got)
	}
	subscribe(t, a, "lobby", "", false)
	bob := subscribe(t, b, "lobby", "bob", false)
	subscribe(t, b, "lobby", "alice", false)
	subscribe(t, b, "only-b", "", false)

	eventually(t, "presence on A", "alice:2 bob:1 anonymous=1", func() string { return presenceOf(t, a, "lobby") })
	eventually(t, "presence on B", "alice:2 bob:1 anonymous=1", func() string { return presenceOf(t, b, "lobby") })
	eventually(t, "rooms on A", "lobby:4/2 only-b:1/0", func() string { return roomsOf(a) })
	// alice's stream on A may be announced on its own, before B's.
	got := nextPresence(t, watcher, 2*time.Second)
	if got == `{"joined":["alice"],"left":[]}` {
		got = nextPresence(t, watcher, 2*time.Second)
	}
	if got != `{"joined":["bob"],"left":[]}` && got != `{"joined":["alice","bob"],"left":[]}` {
		t.Fatalf("presence event on A after B's streams opened: %s", got)
	}

	bob.Close()
	if got := nextPresence(t, watcher, 2*time.Second); got != `{"joined":[],"left":["bob"]}` {
		t.Fatalf("presence event on A after bob's stream on B closed: %s", got)
	}
	eventually(t, "rooms on A", "lobby:3/1 only-b:1/0", func() string { return roomsOf(a) })
}

// TestCensusDeadNodeExpires: a node that stops reporting without leaving,
// as a killed process does, drops out of the counts within censusTTL.
func TestCensusDeadNodeExpires(t *testing.T) {
	srv := redistest.Start(t)
	a := node(t, srv.Addr, rooms.Config{})
	dead := New(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Prefix: "test:"})
	defer dead.Close()
	if _, err := dead.Exchange(context.Background(), map[string]rooms.Headcount{"lobby": {Subscribers: 2, Users: map[string]int{"zoe": 2}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "presence on A", "zoe:2 anonymous=0", func() string { return presenceOf(t, a, "lobby") })
	died := time.Now()
	deadline := died.Add(censusTTL + 2*time.Second)
	for presenceOf(t, a, "lobby") != "anonymous=0" || roomsOf(a) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("%v after the node stopped reporting, A still shows %q and rooms %q", time.Since(died), presenceOf(t, a, "lobby"), roomsOf(a))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gone := time.Since(died); gone < censusTTL-time.Second {
		t.Fatalf("the node dropped out %v after its last report, before its TTL of %v", gone, censusTTL)
	}
}

// TestHitAcrossNodes: two stores count one key's events in one window,
// which ends after its length.
func TestHitAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	stores := [2]*Store{}
	for i := range stores {
		stores[i] = New(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Prefix: "test:"})
		defer stores[i].Close()
	}
	const window = 600 * time.Millisecond
	for i := range 4 {
		n, left, err := stores[i%2].Hit(ctx, "ip:1", window)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(i+1) || left <= 0 || left > window {
			t.Fatalf("hit %d: n=%d left=%v; want n=%d, 0 < left <= %v", i, n, left, i+1, window)
		}
	}
	if n, _, _ := stores[0].Hit(ctx, "ip:2", window); n != 1 {
		t.Fatalf("another key counted %d, want 1", n)
	}
	time.Sleep(window + 100*time.Millisecond)
	if n, _, _ := stores[1].Hit(ctx, "ip:1", window); n != 1 {
		t.Fatalf("after the window ended the key counted %d, want 1", n)
	}
}

// TestDirectoryListsEveryRoom: a node lists the rooms another node made,
// with their newest ids, and a fresh node those no node has open; a node
// deletes one it never opened, ending the streams on the other node, and
// the room leaves every listing.
func TestDirectoryListsEveryRoom(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	var last rooms.Message
	for _, room := range []string{"kept", "lobby"} {
		var err error
		if last, _, err = a.Submit(room, rooms.Post{User: "alice", Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	sub := subscribe(t, a, "lobby", "", false)
	listing := func(m *rooms.Manager) func() string {
		return func() string {
			var out []string
			for _, r := range m.Rooms() {
				out = append(out, fmt.Sprintf("%s:%d:%v", r.Name, r.Subscribers, r.LastID != ""))
			}
			return strings.Join(out, " ")
		}
	}
	eventually(t, "rooms on B", "kept:0:true lobby:1:true", listing(b))
	if got := b.Rooms()[1].LastID; got != last.ID {
		t.Fatalf("B lists lobby's last id as %q, want %s", got, last.ID)
	}

	if err := b.Delete("lobby"); err != nil {
		t.Fatalf("deleting on B a room only A has open: %v", err)
	}
	deadline := time.After(3 * time.Second)
	for {
		if _, err := sub.Take(nil); err != nil {
			if !errors.Is(err, rooms.ErrRoomClosed) {
				t.Fatalf("stream on A ended with %v, want ErrRoomClosed", err)
			}
			break
		}
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatal("the stream on A did not end within 3s of the delete on B")
		}
	}
	eventually(t, "rooms on B", "kept:0:true", listing(b))
	eventually(t, "rooms on A", "kept:0:true", listing(a))
	if err := b.Delete("lobby"); !errors.Is(err, rooms.ErrNotFound) {
		t.Fatalf("deleting a deleted room: %v, want ErrNotFound", err)
	}
	// A stops: no node has kept open, yet it is listed.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := node(t, srv.Addr, rooms.Config{})
	eventually(t, "rooms on a fresh node", "kept:0:true", listing(fresh))
}

// TestCensusForgetsOthersWhenCutOff: a node that cannot reach Redis keeps
// the other nodes' streams for censusTTL, then counts its own only.
func TestCensusForgetsOthersWhenCutOff(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	subscribe(t, a, "lobby", "alice", false)
	subscribe(t, b, "lobby", "bob", false)
	eventually(t, "presence on A", "alice:1 bob:1 anonymous=0", func() string { return presenceOf(t, a, "lobby") })
	srv.Stop()
	cut := time.Now()
	time.Sleep(censusTTL / 2)
	if got := presenceOf(t, a, "lobby"); got != "alice:1 bob:1 anonymous=0" {
		t.Fatalf("%v after Redis stopped, presence on A is %q; want bob kept for %v", time.Since(cut), got, censusTTL)
	}
	deadline := cut.Add(censusTTL + 2*time.Second)
	for presenceOf(t, a, "lobby") != "alice:1 anonymous=0" {
		if time.Now().After(deadline) {
			t.Fatalf("%v after Redis stopped, presence on A is still %q", time.Since(cut), presenceOf(t, a, "lobby"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkExchange measures one census exchange of a node with 10,000
// rooms of three named users each, beside another such node: unchanged,
// the tick of an idle node; with one room changed, a presence change.
func BenchmarkExchange(b *testing.B) {
	srv := redistest.Start(b)
	here := make(map[string]rooms.Headcount, 10000)
	for i := range 10000 {
		here[fmt.Sprint("room", i)] = rooms.Headcount{Subscribers: 3, Users: map[string]int{"alice": 1, "bob": 1, "carol": 1}, LastID: "e-1"}
	}
	ctx := context.Background()
	var stores [2]*Store
	for i := range stores {
		stores[i] = New(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Prefix: "bench:"})
		defer stores[i].Close()
		if _, err := stores[i].Exchange(ctx, here); err != nil {
			b.Fatal(err)
		}
	}
	for _, changed := range []bool{false, true} {
		b.Run(fmt.Sprint("changed=", changed), func(b *testing.B) {
			for i := range b.N {
				if changed {
					here["room0"] = rooms.Headcount{Subscribers: 3 + i%2, Users: here["room0"].Users, LastID: "e-1"}
				}
				if _, err := stores[0].Exchange(ctx, here); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
