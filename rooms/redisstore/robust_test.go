package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/rooms/storetest"
)

// timed runs f on its own goroutine and returns its error and how long it
// took, or fails the test after limit.
func timed(t *testing.T, limit time.Duration, what string, f func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(limit):
		t.Fatalf("%s took more than %v", what, limit)
		return 0, nil
	}
}

// TestHangingRedis: Redis stopped with SIGSTOP accepts connections and
// answers nothing. Submits fail as unavailable within the store timeout; a
// room that cannot be opened fails its subscribe likewise, and so does the
// delete of a room; meanwhile a room already open is followed again (a
// reader resuming from its newest message included) and the rooms are
// listed at once.
// Once Redis continues, submits succeed and the stream that stayed open
// receives them, in order, with no gap.
func TestHangingRedis(t *testing.T) {
	const storeTimeout = 2 * time.Second
	srv := redistest.Start(t)
	cfg := rooms.Config{StoreTimeout: storeTimeout}
	a, b := node(t, srv.Addr, cfg), node(t, srv.Addr, cfg)
	before, sub := heardOn(t, a, b, "lobby", "before")
	if _, _, err := a.Submit("doomed", rooms.Post{User: "alice", Text: "soon gone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Messages("doomed", "", "", 1); err != nil {
		t.Fatal(err)
	}

	srv.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume(t)
		}
	}()
	fresh := make(chan error, 1)
	go func() {
		_, err := b.Subscribe("fresh", rooms.Position{}, nil)
		fresh <- err
	}()
	deleted := make(chan error, 1)
	go func() { deleted <- b.Delete("doomed") }()
	time.Sleep(100 * time.Millisecond) // b opens "fresh" and deletes "doomed", which hang
	if took, err := timed(t, time.Second, "following an open room while another opens", func() error {
		again, err := b.Subscribe("lobby", rooms.Position{}, nil)
		if err != nil {
			return err
		}
		again.Close()
		// A reader resuming from the newest message B heard of needs
		// nothing of Redis: what follows reaches it live.
		resumed, err := b.Subscribe("lobby", rooms.Position{LastEventID: before.ID}, nil)
		if err != nil {
			return fmt.Errorf("resuming from the newest message: %w", err)
		}
		resumed.Close()
		if rs := b.Rooms(); len(rs) != 1 || rs[0].Name != "lobby" {
			return fmt.Errorf("rooms: %v, want lobby", rs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("a stream to an open room and the room list took %v while Redis hangs", took)
	}
	took, err := timed(t, 3*storeTimeout, "a submit while Redis hangs", func() error {
		_, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "maybe"})
		return err
	})
	if !errors.Is(err, rooms.ErrUnavailable) {
		t.Fatalf("submit while Redis hangs: %v, want ErrUnavailable", err)
	}
	t.Logf("a submit failed after %v while Redis hangs", took)
	for what, ch := range map[string]chan error{"subscribe to a new room": fresh, "delete": deleted} {
		select {
		case err := <-ch:
			if !errors.Is(err, rooms.ErrUnavailable) {
				t.Fatalf("%s while Redis hangs: %v, want ErrUnavailable", what, err)
			}
		case <-time.After(3 * storeTimeout):
			t.Fatalf("%s while Redis hangs did not end", what)
		}
	}

	srv.Resume(t)
	resumed = true
	after := submitWhenBack(t, a, "lobby", "after")
	// The refused submit may yet have been stored: Redis reads it when it
	// continues. Either way the stream holds every message once, in order.
	_, last, _ := rooms.ParseID(after.ID)
	got := storetest.IDs(t, sub, int(last))
	epoch, _, _ := rooms.ParseID(before.ID)
	for i, id := range got {
		if id != rooms.FormatID(epoch, uint64(i+1)) {
			t.Fatalf("stream after Redis continued: %v; want %d ids of epoch %s in order", got, last, epoch)
		}
	}
}

// TestCloseWaitsForItsGoroutines: a Store that let many rooms go, each
// unsubscribed on a goroutine of its own, leaves none of them running once
// Close returns.
func TestCloseWaitsForItsGoroutines(t *testing.T) {
	srv := redistest.Start(t)
	baseline := goleak.IgnoreCurrent()
	s := New(redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true}), Options{Prefix: "test:"})
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := rooms.New(rooms.Config{Store: s, StoreTimeout: 5 * time.Second})
	for i := range 200 {
		sub, err := m.Subscribe(fmt.Sprint("room", i), rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sub.Close()
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "redisstore.(*Store)") {
		t.Fatalf("goroutines of the store still run after Close:\n%s", stacks)
	}
	goleak.VerifyNone(t, baseline)
}

// stall holds the answers Redis sends a client, on every connection but
// its subscription connection, while it is locked.
type stall struct{ sync.RWMutex }

func (s *stall) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, stall: s}, nil
}

type stallConn struct {
	net.Conn
	stall  *stall
	pubsub atomic.Bool
}

func (c *stallConn) Write(p []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(p), []byte("subscribe")) {
		c.pubsub.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *stallConn) Read(p []byte) (int, error) {
	if !c.pubsub.Load() {
		c.stall.RLock()
		c.stall.RUnlock()
	}
	return c.Conn.Read(p)
}

// TestGapIsReadOffTheListener: node B hears a message of one room past a
// gap, and Redis is slow to answer the read of the gap. Meanwhile B
// delivers another room's messages, heard next on the same subscription
// connection, and lists its rooms; once the read returns, the first room's
// stream receives the gap and the message after it, in order.
func TestGapIsReadOffTheListener(t *testing.T) {
	srv := redistest.Start(t)
	var st stall
	a := node(t, srv.Addr, rooms.Config{})
	b := nodeWith(t, &redis.Options{Addr: srv.Addr, Dialer: st.dial}, rooms.Config{StoreTimeout: 10 * time.Second})
	first, _, err := a.Submit("gap", rooms.Post{User: "alice", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	var subs []*rooms.Subscription
	for _, room := range []string{"gap", "live"} {
		sub, err := b.Subscribe(room, rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Close)
		subs = append(subs, sub)
	}
	// The second message is stored without a word to the channel, as if
	// B's subscription connection had been down when it was published.
	epoch, _, _ := rooms.ParseID(first.ID)
	storeUnheard(t, srv.Addr, "gap", epoch, 100, 1)

	st.Lock()
	// Before the streams and the nodes close, even when the test fails.
	answer := sync.OnceFunc(st.Unlock)
	t.Cleanup(answer)
	third, _, err := a.Submit("gap", rooms.Post{User: "alice", Text: "three"})
	if err != nil {
		t.Fatal(err)
	}
	live, _, err := a.Submit("live", rooms.Post{User: "alice", Text: "meanwhile"})
	if err != nil {
		t.Fatal(err)
	}
	if took, err := timed(t, 3*time.Second, "another room's message while a gap is read", func() error {
		if got, err := storetest.TryIDs(subs[1], 1); err != nil || got[0] != live.ID {
			return fmt.Errorf("live room delivered %v (%v), want %s", got, err, live.ID)
		}
		if rs := b.Rooms(); len(rs) != 2 {
			return fmt.Errorf("rooms while a gap is read: %v", rs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("another room delivered and the rooms listed in %v while a gap is read", took)
	}
	answer()
	if got, want := storetest.IDs(t, subs[0], 2), []string{rooms.FormatID(epoch, 2), third.ID}; !slicesEqual(got, want) {
		t.Fatalf("room with a gap delivered %v, want %v", got, want)
	}
}
