package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/rooms/storetest"
)

// node is one process's view of the shared rooms: a Manager on its own
// Store and client.
func node(t testing.TB, addr string, cfg rooms.Config) *rooms.Manager {
	t.Helper()
	return nodeWith(t, &redis.Options{Addr: addr}, cfg)
}

// nodeWith is node on a client with opts, such as a dialer of the test's.
func nodeWith(t testing.TB, opts *redis.Options, cfg rooms.Config) *rooms.Manager {
	t.Helper()
	// The client's own timeouts are short, with room for a loaded
	// machine, unless the test bounds the Manager's calls: then that
	// bound fails them.
	timeout := 2 * time.Second
	if cfg.StoreTimeout > 0 {
		timeout = 2 * cfg.StoreTimeout
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = timeout, timeout, timeout
	opts.MaxRetries, opts.ContextTimeoutEnabled = -1, true
	s := New(redis.NewClient(opts), Options{Prefix: "test:"})
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cfg.History == 0 {
		cfg.History = 100
	}
	cfg.Buffer = 1024
	cfg.Store = s
	m := rooms.New(cfg)
	t.Cleanup(func() {
		m.Close()
		s.Close()
	})
	return m
}

func TestSharedRoomAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})

	first, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := b.Messages("lobby", "", "", 10); err != nil || len(rep.Messages) != 1 || rep.Messages[0].ID != first.ID {
		t.Fatalf("messages on B of a room made on A: %v, %v; want %s", rep.Messages, err, first.ID)
	}
	if _, err := b.Messages("nowhere", "", "", 10); !errors.Is(err, rooms.ErrNotFound) {
		t.Fatalf("messages of a room no node made: %v, want ErrNotFound", err)
	}
	// A node that never saw the room serves its history and follows it.
	sub, err := b.Subscribe("lobby", rooms.Position{History: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	second, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "two"})
	if err != nil {
		t.Fatal(err)
	}
	third, _, err := b.Submit("lobby", rooms.Post{User: "bob", Text: "three"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{first.ID, second.ID, third.ID}
	if got := storetest.IDs(t, sub, 3); !slicesEqual(got, want) {
		t.Fatalf("node B delivered %v, want %v", got, want)
	}
	epoch, seq, _ := rooms.ParseID(third.ID)
	if e, _, _ := rooms.ParseID(first.ID); e != epoch || seq != 3 {
		t.Fatalf("ids %v do not continue one sequence", want)
	}

	// A reader moving from A to B with A's id resumes, no reset.
	resumed, err := b.Subscribe("lobby", rooms.Position{LastEventID: first.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if resumed.Reset || len(resumed.Messages) != 2 || resumed.Messages[0].ID != second.ID {
		t.Fatalf("resume on B after %s: reset=%v messages=%v", first.ID, resumed.Reset, resumed.Messages)
	}
}

func TestResumeOnFreshNodeWithNewestID(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	// B opens the room first, before anything is stored: it makes up an
	// epoch that A's first message must replace.
	early, err := b.Subscribe("lobby", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if got := storetest.IDs(t, early, 1); got[0] != msg.ID {
		t.Fatalf("early subscriber on B got %v, want %s", got, msg.ID)
	}
	sub, err := b.Subscribe("lobby", rooms.Position{LastEventID: msg.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Reset || len(sub.Messages) != 0 {
		t.Fatalf("resume on B with the newest id: reset=%v messages=%v", sub.Reset, sub.Messages)
	}
}

func TestConcurrentPublishersOneOrder(t *testing.T) {
	srv := redistest.Start(t)
	nodes := []*rooms.Manager{node(t, srv.Addr, rooms.Config{History: 1000}), node(t, srv.Addr, rooms.Config{History: 1000}), node(t, srv.Addr, rooms.Config{History: 1000})}
	var subs []*rooms.Subscription
	for _, n := range nodes {
		sub, err := n.Subscribe("lobby", rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	const each = 100
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*each)
	for i, n := range nodes {
		for w := range 2 {
			wg.Go(func() {
				for j := range each / 2 {
					if _, _, err := n.Submit("lobby", rooms.Post{User: fmt.Sprint("u", i, w), Text: strconv.Itoa(j)}); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := len(nodes) * each
	var first []string
	for i, sub := range subs {
		got := storetest.IDs(t, sub, total)
		if len(got) != total {
			t.Fatalf("node %d delivered %d messages, want %d", i, len(got), total)
		}
		for j, id := range got {
			if _, seq, _ := rooms.ParseID(id); seq != uint64(j+1) {
				t.Fatalf("node %d delivered %s at position %d: out of order, duplicated or skipped", i, id, j)
			}
		}
		if first == nil {
			first = got
		} else if !slicesEqual(got, first) {
			t.Fatalf("node %d delivered another sequence than node 0", i)
		}
	}
}

func TestIdempotencyKeyAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	post := rooms.Post{User: "alice", Text: "once", Key: "k1", Scope: "alice"}
	first, repeat, err := a.Submit("lobby", post)
	if err != nil || repeat {
		t.Fatalf("first submit: repeat=%v err=%v", repeat, err)
	}
	again, repeat, err := b.Submit("lobby", post)
	if err != nil || !repeat || again.ID != first.ID {
		t.Fatalf("retry on B: %v repeat=%v err=%v, want %s as a repeat", again.ID, repeat, err, first.ID)
	}
	other := post
	other.Text = "another"
	if _, _, err := b.Submit("lobby", other); !errors.Is(err, rooms.ErrKeyReused) {
		t.Fatalf("key reused for another text on B: err=%v, want ErrKeyReused", err)
	}
	rep, err := b.Messages("lobby", "", "", 10)
	if err != nil || len(rep.Messages) != 1 {
		t.Fatalf("stored %d messages (%v), want 1", len(rep.Messages), err)
	}
}

func TestConcurrentRetriesStoreOnce(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	// Both nodes have the room open, so neither has heard of the key when
	// the retries race: the script decides.
	for _, n := range []*rooms.Manager{a, b} {
		if _, _, err := n.Submit("lobby", rooms.Post{User: "x", Text: "open"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		post := rooms.Post{User: "alice", Text: "race", Key: fmt.Sprint("k", i), Scope: "alice"}
		var wg sync.WaitGroup
		var got [2]rooms.Message
		var errs [2]error
		for j, n := range []*rooms.Manager{a, b} {
			wg.Go(func() { got[j], _, errs[j] = n.Submit("lobby", post) })
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil || got[0].ID != got[1].ID {
			t.Fatalf("retry %d on two nodes at once: %v %v, %v %v; want one id", i, got[0].ID, errs[0], got[1].ID, errs[1])
		}
	}
	rep, err := a.Messages("lobby", "", "", 100)
	if err != nil || len(rep.Messages) != 2+20 {
		t.Fatalf("stored %d messages (%v), want 22", len(rep.Messages), err)
	}
}

func TestDeleteEndsStreamsOnOtherNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	if _, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe("lobby", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := a.Delete("lobby"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatal("the stream on B stayed open after the room was deleted on A")
		}
		if _, err := sub.Take(nil); errors.Is(err, rooms.ErrRoomClosed) {
			break
		} else if err != nil {
			t.Fatalf("stream on B ended with %v, want ErrRoomClosed", err)
		}
	}
	msg, _, err := b.Submit("lobby", rooms.Post{User: "bob", Text: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if _, seq, _ := rooms.ParseID(msg.ID); seq != 1 {
		t.Fatalf("first message after the delete has id %s, want sequence 1", msg.ID)
	}
}

func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	before, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "before"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe("lobby", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	srv.Stop()
	if _, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "lost"}); !errors.Is(err, rooms.ErrUnavailable) {
		t.Fatalf("submit with redis down: err=%v, want ErrUnavailable", err)
	}
	if frames, err := sub.Take(nil); err != nil || len(frames) != 0 {
		t.Fatalf("stream on B with redis down: %d frames, err=%v; want it open and quiet", len(frames), err)
	}

	srv.Restart(t)
	after := submitWhenBack(t, a, "lobby", "after")
	if e, _, _ := rooms.ParseID(before.ID); !strings.HasPrefix(after.ID, e+"-") {
		t.Fatalf("after redis came back, id %s is not in epoch of %s", after.ID, before.ID)
	}
	if got := storetest.IDs(t, sub, 1); got[0] != after.ID {
		t.Fatalf("stream on B got %v after redis came back, want %s", got, after.ID)
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

func TestIdleOnOneNodeKeepsTheRoom(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{IdleTimeout: 50 * time.Millisecond})
	first, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := a.Subscribe("lobby", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := b.Messages("lobby", "", "", 10); err != nil {
		t.Fatal(err)
	}
	// B sweeps the room, in which nothing happens there.
	deadline := time.Now().Add(5 * time.Second)
	for b.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("node B did not sweep the idle room")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if got := storetest.IDs(t, sub, 1); got[0] != second.ID {
		t.Fatalf("stream on A got %v after B swept the room, want %s", got, second.ID)
	}
	rep, err := b.Messages("lobby", "", "", 10)
	if err != nil || len(rep.Messages) != 2 || rep.Messages[0].ID != first.ID {
		t.Fatalf("messages on B after its sweep: %v, %v; want %s and %s", rep.Messages, err, first.ID, second.ID)
	}
}

// TestRedisRestartUnderLoad: publishers on two nodes retry with their
// idempotency keys while Redis is killed and started again. Afterwards
// every acknowledged message is stored once with the id it was
// acknowledged with, and the streams that stayed open on both nodes
// delivered the same ids in order, each once, catching up on what was
// stored while they could not hear it.
func TestRedisRestartUnderLoad(t *testing.T) {
	srv := redistest.Start(t)
	nodes := []*rooms.Manager{node(t, srv.Addr, rooms.Config{History: 1000}), node(t, srv.Addr, rooms.Config{History: 1000})}
	if _, _, err := nodes[0].Submit("lobby", rooms.Post{User: "x", Text: "open"}); err != nil {
		t.Fatal(err)
	}
	var subs []*rooms.Subscription
	for _, n := range nodes {
		sub, err := n.Subscribe("lobby", rooms.Position{History: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	var mu sync.Mutex
	acked := make(map[string]string) // text → id
	var refused int
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	stop := make(chan struct{})
	errs := make(chan error, len(nodes))
	var wg sync.WaitGroup
	for n, m := range nodes {
		wg.Go(func() {
			deadline := time.Now().Add(20 * time.Second)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				text := fmt.Sprint(n, "-", i)
				for {
					msg, _, err := m.Submit("lobby", rooms.Post{User: "u", Text: text, Key: text, Scope: "u"})
					if err == nil {
						mu.Lock()
						acked[text] = msg.ID
						mu.Unlock()
						break
					}
					if !errors.Is(err, rooms.ErrUnavailable) || time.Now().After(deadline) {
						errs <- fmt.Errorf("%s: %w", text, err)
						return
					}
					mu.Lock()
					refused++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	waitCount := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d messages acknowledged, want %d", count(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitCount(50)
	srv.Stop()
	// Down until submits are refused: the client's dial retries may
	// outlast a short outage.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := refused
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no submit was refused while Redis was down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	srv.Restart(t)
	waitCount(count() + 50)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := len(acked) + 1
	rep, err := nodes[1].Messages("lobby", "", "", 1000)
	if err != nil || len(rep.Messages) != total {
		t.Fatalf("stored %d messages (%v), want %d", len(rep.Messages), err, total)
	}
	for _, m := range rep.Messages[1:] {
		if id, ok := acked[m.Message]; !ok || id != m.ID {
			t.Fatalf("%q stored as %s, acknowledged as %q", m.Message, m.ID, id)
		}
	}
	for i, sub := range subs {
		got := storetest.IDs(t, sub, total)
		for j, id := range got {
			if id != rep.Messages[j].ID {
				t.Fatalf("stream on node %d: message %d is %s, want %s", i, j, id, rep.Messages[j].ID)
			}
		}
	}
	t.Logf("%d submits refused while Redis was down", refused)
}

func TestReopenedRoomStaysSubscribed(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	for i := range 20 {
		room := fmt.Sprint("room", i)
		// A stream alone does not keep a room: closing it lets the room
		// go on B, and the next one opens it again at once.
		first, err := b.Subscribe(room, rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		first.Close()
		sub, err := b.Subscribe(room, rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		msg, _, err := a.Submit(room, rooms.Post{User: "alice", Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if got := storetest.IDs(t, sub, 1); got[0] != msg.ID {
			t.Fatalf("reopened stream on B got %v, want %s", got, msg.ID)
		}
		sub.Close()
	}
}

// TestExpiredRoomGetsNewEpoch: Redis expires a room's keys after its idle
// TTL, with no notice, while a node still has the room open with a
// stream. The next post there must not make the room again in its old
// epoch: its sequence starts over, so it would take the id of a message
// that readers already have, and a reader resuming from that id would
// never get it.
func TestExpiredRoomGetsNewEpoch(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	sub, err := a.Subscribe("lobby", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	first, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if got := storetest.IDs(t, sub, 1); got[0] != first.ID {
		t.Fatalf("stream got %v, want %s", got, first.ID)
	}
	// What the idle TTL does to the room's keys: they go, and nothing
	// is published.
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	if err := raw.Del(context.Background(), "test:{lobby}:meta", "test:{lobby}:msgs").Err(); err != nil {
		t.Fatal(err)
	}
	second, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Fatalf("the post after the room expired took the id %s of the message before", second.ID)
	}
	oldEpoch, _, _ := rooms.ParseID(first.ID)
	if epoch, _, _ := rooms.ParseID(second.ID); epoch == oldEpoch {
		t.Fatalf("the room expired and was made again in its old epoch: %s after %s", second.ID, first.ID)
	}
	// A reader resuming from the first message is told the room started
	// over, and gets the second.
	rep, err := b.Messages("lobby", first.ID, "", 10)
	if err != nil || !rep.Reset || len(rep.Messages) != 1 || rep.Messages[0].ID != second.ID {
		t.Fatalf("resuming after %s: reset=%v messages=%v, %v; want a reset and %s", first.ID, rep.Reset, rep.Messages, err, second.ID)
	}
}

// TestGapLongerThanHistory: node A keeps a longer history than node B (a
// reload that changes history reaches the nodes one at a time). A gap on B
// longer than B's history, all of it still in the stream, is delivered
// whole to B's open stream, in order, not its first messages and then a
// jump past the rest.
func TestGapLongerThanHistory(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{History: 10}), node(t, srv.Addr, rooms.Config{History: 3})
	sub, epoch := unheardGap(t, srv.Addr, a, b, 10)
	want := []string{}
	for seq := 2; seq <= 7; seq++ {
		want = append(want, rooms.FormatID(epoch, uint64(seq)))
	}
	last, _, err := a.Submit("gap", rooms.Post{User: "alice", Text: "heard"})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, last.ID)
	if got := storetest.IDs(t, sub, len(want)); !slicesEqual(got, want) {
		t.Fatalf("B delivered %v after a gap, want %v", got, want)
	}
}

// TestPostToRoomMadeElsewhereIsNoNewRoom: a post on node B to a room that
// node A made, and B has not opened, is no new room of its author's:
// max_new_rooms_per_client must not refuse it.
func TestPostToRoomMadeElsewhereIsNoNewRoom(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	if _, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "made on A"}); err != nil {
		t.Fatal(err)
	}
	created := 0
	post := rooms.Post{User: "bob", Text: "on B", Create: func() error {
		created++
		return nil
	}}
	if _, _, err := b.Submit("lobby", post); err != nil {
		t.Fatal(err)
	}
	if created != 0 {
		t.Fatal("a post on B to a room A made was counted as a new room")
	}
	post.Text = "a room of its own"
	if _, _, err := b.Submit("new", post); err != nil {
		t.Fatal(err)
	}
	if created != 1 {
		t.Fatalf("a post that made a room was counted %d times, want once", created)
	}
}

// TestGapPastTheStreamEvicts: B misses more messages than the stream still
// holds. Its open streams cannot get them: they are evicted, as a reader
// that fell behind is, and resuming from their last id they are told the
// history moved on (a reset), rather than jumping past the lost messages
// with no word.
func TestGapPastTheStreamEvicts(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{History: 3}), node(t, srv.Addr, rooms.Config{History: 3})
	// The stream keeps the newest 3 of messages 2 to 7.
	sub, epoch := unheardGap(t, srv.Addr, a, b, 3)
	if _, _, err := a.Submit("gap", rooms.Post{User: "alice", Text: "heard"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatalf("B's stream got %v and stayed open after a gap past the stream", got)
		}
		frames, err := sub.Take(nil)
		for _, f := range frames {
			got = append(got, f.Message.ID)
		}
		if errors.Is(err, rooms.ErrEvicted) {
			break
		} else if err != nil {
			t.Fatalf("B's stream ended with %v, want ErrEvicted", err)
		}
	}
	first := rooms.FormatID(epoch, 1)
	resumed, err := b.Subscribe("gap", rooms.Position{LastEventID: first}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if !resumed.Reset {
		t.Fatalf("resuming on B from %s after the gap: no reset, messages %v", first, resumed.Messages)
	}
}

// heardOn posts text to room on node a, and returns it with a subscription
// on node b that has received it; the subscription closes when t ends.
func heardOn(t *testing.T, a, b *rooms.Manager, room, text string) (rooms.Message, *rooms.Subscription) {
	t.Helper()
	msg, _, err := a.Submit(room, rooms.Post{User: "alice", Text: text})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(room, rooms.Position{History: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	if got := storetest.IDs(t, sub, 1); got[0] != msg.ID {
		t.Fatalf("subscriber on B got %v, want %s", got, msg.ID)
	}
	return msg, sub
}

// unheardGap opens room "gap" with one message posted on node a, follows
// it on node b from there, and stores messages 2 to 7 with no word to the
// room's channel, as if b's subscription connection had been down
// meanwhile, in a stream that keeps history of them. It returns b's
// subscription, which closes when t ends, and the room's epoch.
func unheardGap(t *testing.T, addr string, a, b *rooms.Manager, history int) (*rooms.Subscription, string) {
	t.Helper()
	first, _, err := a.Submit("gap", rooms.Post{User: "alice", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe("gap", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	epoch, _, _ := rooms.ParseID(first.ID)
	storeUnheard(t, addr, "gap", epoch, history, 6)
	return sub, epoch
}

// storeUnheard stores n messages in room, in epoch, keeping history of
// them, as another node's submits would, but with no word to the room's
// channel: as if a reader's subscription connection had been down
// meanwhile.
func storeUnheard(t *testing.T, addr, room, epoch string, history, n int) {
	t.Helper()
	admin := New(redis.NewClient(&redis.Options{Addr: addr}), Options{Prefix: "test:"})
	defer admin.Close()
	k := admin.keysOf(room)
	for i := range n {
		if err := admin.append.Run(context.Background(), admin.client, []string{k.meta, k.stream, k.call + strconv.Itoa(i)},
			epoch, history, 60000, "test:elsewhere", 1, 0, 60000, epoch, 0, time.Now().UnixMilli(), "bob", "unheard", "0", 0, "", "", "", "0", "", "").Err(); err != nil {
			t.Fatalf("storing a message unheard: %v", err)
		}
	}
}

// submitWhenBack posts text to room on m until Redis, back after a
// failure, takes it, and fails the test if it does not within 10 s.
func submitWhenBack(t *testing.T, m *rooms.Manager, room, text string) rooms.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg, _, err := m.Submit(room, rooms.Post{User: "alice", Text: text})
		if err == nil {
			return msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("submits still fail after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCallAnswerKeptOnlyForARetryingClient: the answer to a submit is kept
// in Redis, for a retry of the call, only by the Cluster client, which
// retries, and only for about twice the call's deadline; the single-server
// client, which never retries, leaves none behind.
func TestCallAnswerKeptOnlyForARetryingClient(t *testing.T) {
	const deadline = time.Second
	submit := func(t *testing.T, client redis.UniversalClient) (*Store, string) {
		t.Helper()
		s := New(client, Options{Prefix: "test:"})
		m := rooms.New(rooms.Config{History: 10, Buffer: 10, Store: s, StoreTimeout: deadline})
		t.Cleanup(func() {
			m.Close()
			s.Close()
		})
		if _, _, err := m.Submit("lobby", rooms.Post{User: "alice", Text: "hi"}); err != nil {
			t.Fatal(err)
		}
		return s, s.keysOf("lobby").call + s.id + "-1"
	}
	t.Run("Single", func(t *testing.T) {
		srv := redistest.Start(t)
		client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
		_, token := submit(t, client)
		check := redis.NewClient(&redis.Options{Addr: srv.Addr})
		defer check.Close()
		keys, err := check.Keys(context.Background(), "test:*call:*").Result()
		if err != nil || len(keys) != 0 {
			t.Fatalf("the single-server client left call answers %v (%v) under %s, want none", keys, err, token)
		}
	})
	t.Run("Cluster", func(t *testing.T) {
		var addrs []string
		for _, n := range redistest.StartCluster(t, 3) {
			addrs = append(addrs, n.Addr)
		}
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1})
		s, token := submit(t, client)
		ttl, err := s.client.PTTL(context.Background(), token).Result()
		if err != nil || ttl <= 0 || ttl > 2*deadline {
			t.Fatalf("the cluster client's call answer %s lives %v (%v), want it kept for at most %v", token, ttl, err, 2*deadline)
		}
	})
}

// TestRestartThatLostWritesMovesOn: when Redis comes back from a restart
// without its last writes (as after a crash with appendfsync everysec), a
// node that delivered the lost messages has the room go on in a new epoch
// as soon as it reads the room again: its stream ends for the reader to
// resume, and a node that never saw them posts in the new epoch rather
// than give their ids again.
func TestRestartThatLostWritesMovesOn(t *testing.T) {
	srv := redistest.Start(t)
	a, b := node(t, srv.Addr, rooms.Config{}), node(t, srv.Addr, rooms.Config{})
	sub, err := b.Subscribe("lobby", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	kept := []rooms.Message{submitWhenBack(t, a, "lobby", "one"), submitWhenBack(t, a, "lobby", "two")}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	// What follows is not written to disk, and the restart loses it.
	if err := admin.ConfigSet(context.Background(), "appendonly", "no").Err(); err != nil {
		t.Fatal(err)
	}
	lost := []rooms.Message{submitWhenBack(t, a, "lobby", "three"), submitWhenBack(t, a, "lobby", "four")}
	storetest.IDs(t, sub, 4)
	srv.Stop()
	srv.Restart(t)
	if got, err := storetest.Receive(sub, 1); !errors.Is(err, rooms.ErrEvicted) {
		t.Fatalf("the stream that had the lost messages got %v and %v, want it ended with ErrEvicted", got, err)
	}
	five := submitWhenBack(t, node(t, srv.Addr, rooms.Config{}), "lobby", "five")
	if e, _, _ := rooms.ParseID(kept[0].ID); strings.HasPrefix(five.ID, e+"-") {
		t.Fatalf("after the restart lost %s and %s, a fresh node gave %s in their epoch", lost[0].ID, lost[1].ID, five.ID)
	}
	rep, err := b.Messages("lobby", lost[1].ID, "", 10)
	if err != nil || !rep.Reset || len(rep.Messages) != 3 || rep.Messages[2].ID != five.ID {
		t.Fatalf("resuming after the lost %s: %v reset=%v (%v), want a reset, one, two and %s", lost[1].ID, rep.Messages, rep.Reset, err, five.ID)
	}
}
