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

// commandCalls returns how many times the Redis at addr has run each
// command, by lower-case name, from INFO commandstats.
func commandCalls(tb testing.TB, addr string) map[string]int {
	tb.Helper()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	calls := map[string]int{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[name], _ = strconv.Atoi(n)
	}
	return calls
}

// TestPipelinedSubmits: submits to one room on one node do not wait for
// each other's round trip to Redis. Three that come while Redis hangs are
// three script calls under way at once, not one and a batch of two
// queued behind it; once Redis answers, each has its own id. Then 16
// submitters flat out: the ids are 1 to n, each exactly once, each
// submitter's increasing, and subscribers on this node and another get
// them all in that order. The node reads none of the gaps that its own
// calls, answered out of order, leave for a moment: no XRANGE.
func TestPipelinedSubmits(t *testing.T) {
	const submitters, each = 16, 25
	srv := redistest.Start(t)
	cfg := rooms.Config{History: 1000, StoreTimeout: 5 * time.Second}
	a, b := node(t, srv.Addr, cfg), node(t, srv.Addr, cfg)
	subs := subscribeAll(t, "lobby", a, b)

	before := commandCalls(t, srv.Addr)
	srv.Pause(t)
	resumed := sync.OnceFunc(func() { srv.Resume(t) })
	defer resumed()
	held := make(chan outcome, 3)
	for i := range cap(held) {
		go func() {
			msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: fmt.Sprint("held ", i)})
			held <- outcome{msg, err}
		}()
	}
	time.Sleep(300 * time.Millisecond) // all three are sent, or queued
	resumed()
	seen := map[string]bool{}
	for range cap(held) {
		o := <-held
		if o.err != nil || seen[o.msg.ID] {
			t.Fatalf("submit held while Redis hung: %s, %v", o.msg.ID, o.err)
		}
		seen[o.msg.ID] = true
	}
	if calls := commandCalls(t, srv.Addr)["evalsha"] - before["evalsha"]; calls != cap(held) {
		t.Errorf("%d script calls for %d submits that came while Redis hung, want one each, all under way at once", calls, cap(held))
	}

	before = commandCalls(t, srv.Addr)
	got := make([][]uint64, submitters)
	errs := make([]error, submitters)
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Go(func() {
			for j := range each {
				msg, _, err := a.Submit("lobby", rooms.Post{User: fmt.Sprint("u", g), Text: strconv.Itoa(j)})
				if err != nil {
					errs[g] = err
					return
				}
				_, seq, _ := rooms.ParseID(msg.ID)
				got[g] = append(got[g], seq)
			}
		})
	}
	wg.Wait()
	total := cap(held) + submitters*each
	stored := make([]bool, total+1)
	for g, seqs := range got {
		if errs[g] != nil {
			t.Fatalf("submitter %d: %v", g, errs[g])
		}
		for i, seq := range seqs {
			if seq <= uint64(cap(held)) || seq > uint64(total) || stored[seq] || i > 0 && seq < seqs[i-1] {
				t.Fatalf("submitter %d got sequence numbers %v: out of range, repeated or decreasing", g, seqs)
			}
			stored[seq] = true
		}
	}
	deliveredInOrder(t, subs, total)
	if reads := commandCalls(t, srv.Addr)["xrange"] - before["xrange"]; reads != 0 {
		t.Errorf("%d XRANGE while one node stored every message: its own calls' gaps were read from the stream", reads)
	}
}

type outcome struct {
	msg rooms.Message
	err error
}

// TestRedisFailsUnderPipelinedSubmits: Redis hangs while script calls are
// under way and more submits queue behind them, then dies. Every submit
// answers ErrUnavailable, none hangs and none succeeds; none of them was
// stored: after a restart, the next message follows the one stored before,
// and it is the next that a subscriber on another node gets.
func TestRedisFailsUnderPipelinedSubmits(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rooms.Config{StoreTimeout: 5 * time.Second}
	a, b := node(t, srv.Addr, cfg), node(t, srv.Addr, cfg)
	first, sub := heardOn(t, a, b, "lobby", "before")

	srv.Pause(t)
	// More than rooms' pipeline depth of 4: some are under way, the rest
	// queue for a writer.
	failed := make(chan outcome, 8)
	for i := range cap(failed) {
		go func() {
			msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: fmt.Sprint("lost ", i)})
			failed <- outcome{msg, err}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	srv.Stop()
	for range cap(failed) {
		select {
		case o := <-failed:
			if !errors.Is(o.err, rooms.ErrUnavailable) {
				t.Errorf("submit while Redis died: id %q, err %v; want ErrUnavailable", o.msg.ID, o.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a submit under way when Redis died has not answered in 20 s")
		}
	}

	srv.Restart(t)
	after := submitWhenBack(t, a, "lobby", "after")
	if _, seq, _ := rooms.ParseID(after.ID); seq != 2 {
		t.Errorf("first message after the restart is %s, want sequence 2: the failed submits stored something", after.ID)
	}
	// The replay, then what came since.
	if got := storetest.IDs(t, sub, 2); got[1] != after.ID {
		t.Errorf("subscriber on B got %v, want %s then %s", got, first.ID, after.ID)
	}
}

// TestTimedOutSubmitReachesItsNode: a submit that times out while Redis
// hangs answers ErrUnavailable, yet Redis runs its script once it
// continues, at a moment no reply tells. The node hears its own notice
// then, as every other: its subscriber gets the message, with no other
// message to reveal the gap. (A node that passed over its own notices, to
// spare decoding them, would not.)
func TestTimedOutSubmitReachesItsNode(t *testing.T) {
	srv := redistest.Start(t)
	a := node(t, srv.Addr, rooms.Config{StoreTimeout: 500 * time.Millisecond})
	// Redis knows the script from then on: the call that times out is
	// no NOSCRIPT.
	first, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "first"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := a.Subscribe("lobby", rooms.Position{LastEventID: first.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	srv.Pause(t)
	_, _, err = a.Submit("lobby", rooms.Post{User: "alice", Text: "late"})
	srv.Resume(t)
	if !errors.Is(err, rooms.ErrUnavailable) {
		t.Fatalf("submit while Redis hung: %v, want ErrUnavailable", err)
	}
	if got := storetest.IDs(t, sub, 1); !strings.HasSuffix(got[0], "-2") {
		t.Fatalf("subscriber got %v, want the timed-out message, sequence 2", got)
	}
}

// TestReservedNameWhileClaimInFlight: on one node, an unverified post under
// a name whose verified post was submitted first, and is stored first, is
// refused with reserve_names, as it was when a room's submits waited for
// each other: readers must never see the verified author's message followed
// by an unverified one under the same name.
func TestReservedNameWhileClaimInFlight(t *testing.T) {
	srv := redistest.Start(t)
	a := node(t, srv.Addr, rooms.Config{History: 100, StoreTimeout: 5 * time.Second})
	if _, _, err := a.Submit("lobby", rooms.Post{User: "bob", Text: "opens the room"}); err != nil {
		t.Fatal(err)
	}
	srv.Pause(t)
	verified, unverified := make(chan outcome, 1), make(chan outcome, 1)
	go func() {
		msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "I am alice", Verified: true})
		verified <- outcome{msg, err}
	}()
	time.Sleep(300 * time.Millisecond) // the verified post is sent first
	go func() {
		msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "me too", ReserveNames: true})
		unverified <- outcome{msg, err}
	}()
	time.Sleep(300 * time.Millisecond)
	srv.Resume(t)
	v, u := <-verified, <-unverified
	if v.err != nil {
		t.Fatalf("verified post: %v", v.err)
	}
	if !errors.Is(u.err, rooms.ErrNameReserved) {
		t.Fatalf("unverified post under verified %q's name (stored as %s) answered %s, %v; want ErrNameReserved", "alice", v.msg.ID, u.msg.ID, u.err)
	}
}

// TestCloseWaitsForSubmitUnderWay: a node that stops (Caddy stops the chat
// app, or a reload changes its store) while a submit waits for Redis
// answers that submit as Redis does: a submit that fails is not a message
// that the other nodes' subscribers then get. Before rooms pipelined
// submits, Close took the room's lock and so waited for the script's
// answer.
func TestCloseWaitsForSubmitUnderWay(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rooms.Config{History: 100, StoreTimeout: 5 * time.Second, Buffer: 1024}
	b := node(t, srv.Addr, cfg)
	s := New(redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ContextTimeoutEnabled: true}), Options{Prefix: "test:"})
	cfg.Store = s
	a := rooms.New(cfg)
	closed := make(chan error, 1)
	stop := sync.OnceFunc(func() { closed <- errors.Join(a.Close(), s.Close()) })
	defer stop()
	first, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "first"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe("lobby", rooms.Position{LastEventID: first.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	srv.Pause(t)
	resumed := sync.OnceFunc(func() { srv.Resume(t) })
	defer resumed()
	submitted := make(chan outcome, 1)
	go func() {
		msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "during shutdown"})
		submitted <- outcome{msg, err}
	}()
	time.Sleep(300 * time.Millisecond) // the script is sent
	go stop()
	time.Sleep(300 * time.Millisecond)
	resumed()
	o := <-submitted
	<-closed
	got, err := storetest.TryIDs(sub, 1)
	t.Logf("submit: %q, %v; subscriber on B: %v, %v", o.msg.ID, o.err, got, err)
	if o.err != nil && len(got) > 0 {
		t.Fatalf("the submit under way when its node stopped answered %v, yet B's subscriber got %v", o.err, got)
	}
}

// TestDeleteBetweenPipelinedSubmits: a room is deleted on node B while two
// submits to it, made on node A while the room was empty, are under way,
// and Redis takes the first, then the delete, then the second. The second
// makes the room again: in a new epoch, as docs/guarantees.md promises for
// a room of the same name after a delete, so no id names two messages. A's
// pool of one connection makes Redis take them in that order.
func TestDeleteBetweenPipelinedSubmits(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rooms.Config{History: 100, StoreTimeout: 5 * time.Second}
	a := nodeWith(t, &redis.Options{Addr: srv.Addr, PoolSize: 1}, cfg)
	b := node(t, srv.Addr, cfg)
	subscribeAll(t, "fresh", a, b)
	srv.Pause(t)
	resumed := sync.OnceFunc(func() { srv.Resume(t) })
	defer resumed()
	first, second, deleted := make(chan outcome, 1), make(chan outcome, 1), make(chan error, 1)
	go func() {
		msg, _, err := a.Submit("fresh", rooms.Post{User: "alice", Text: "first"})
		first <- outcome{msg, err}
	}()
	time.Sleep(300 * time.Millisecond)
	go func() {
		msg, _, err := a.Submit("fresh", rooms.Post{User: "bob", Text: "second"})
		second <- outcome{msg, err}
	}()
	time.Sleep(300 * time.Millisecond)
	go func() { deleted <- b.Delete("fresh") }()
	time.Sleep(300 * time.Millisecond)
	resumed()
	f, s, d := <-first, <-second, <-deleted
	t.Logf("first %s %v, delete %v, second %s %v", f.msg.ID, f.err, d, s.msg.ID, s.err)
	if f.err == nil && s.err == nil && f.msg.ID == s.msg.ID {
		t.Fatalf("two messages answered with one id %s: the room deleted between them was made again in its old epoch", f.msg.ID)
	}
}

// TestKeyRetriedWhileUnderWay: a submit retried with its idempotency key
// while the first is still under way stores one message: both answer its
// id, the retry as a repeat.
func TestKeyRetriedWhileUnderWay(t *testing.T) {
	srv := redistest.Start(t)
	a := node(t, srv.Addr, rooms.Config{History: 100, StoreTimeout: 5 * time.Second})
	if _, _, err := a.Submit("lobby", rooms.Post{User: "bob", Text: "opens the room"}); err != nil {
		t.Fatal(err)
	}
	srv.Pause(t)
	resumed := sync.OnceFunc(func() { srv.Resume(t) })
	defer resumed()
	type answer struct {
		outcome
		repeat bool
	}
	answers := make(chan answer, 2)
	for range cap(answers) {
		go func() {
			msg, repeat, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "once", Key: "k1", Scope: "alice"})
			answers <- answer{outcome{msg, err}, repeat}
		}()
		time.Sleep(300 * time.Millisecond)
	}
	resumed()
	x, y := <-answers, <-answers
	if x.err != nil || y.err != nil || x.msg.ID != y.msg.ID || x.repeat == y.repeat {
		t.Fatalf("a key sent twice answered %s (repeat %v, %v) and %s (repeat %v, %v); want one id, one repeat", x.msg.ID, x.repeat, x.err, y.msg.ID, y.repeat, y.err)
	}
	next, _, err := a.Submit("lobby", rooms.Post{User: "bob", Text: "after"})
	if _, seq, _ := rooms.ParseID(next.ID); err != nil || seq != 3 {
		t.Fatalf("next message %s, %v; want sequence 3: the key stored twice", next.ID, err)
	}
}

// TestPipelinedOrderWithPauses: submitters flat out on node A while Redis
// stops now and then: every id from 1 to n is answered once, and
// subscribers on A and B get them all, in order, once.
func TestPipelinedOrderWithPauses(t *testing.T) {
	const submitters, each = 8, 120 // within the subscribers' buffer of 1024
	srv := redistest.Start(t)
	cfg := rooms.Config{History: 1000, StoreTimeout: 10 * time.Second}
	a, b := node(t, srv.Addr, cfg), node(t, srv.Addr, cfg)
	subs := subscribeAll(t, "lobby", a, b)
	done := make(chan struct{})
	paused := make(chan struct{})
	go func() {
		defer close(paused)
		for {
			select {
			case <-done:
				return
			case <-time.After(40 * time.Millisecond):
			}
			srv.Pause(t)
			time.Sleep(30 * time.Millisecond)
			srv.Resume(t)
		}
	}()
	errs := make([]error, submitters)
	var seen sync.Map
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Go(func() {
			for j := range each {
				msg, _, err := a.Submit("lobby", rooms.Post{User: "u", Text: fmt.Sprint(g, " ", j)})
				if err != nil {
					errs[g] = err
					return
				}
				if _, dup := seen.LoadOrStore(msg.ID, true); dup {
					errs[g] = fmt.Errorf("id %s answered twice", msg.ID)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	<-paused
	for g, err := range errs {
		if err != nil {
			t.Fatalf("submitter %d: %v", g, err)
		}
	}
	deliveredInOrder(t, subs, submitters*each)
}

// subscribeAll subscribes to room from its start on each node; the
// subscriptions close when t ends.
func subscribeAll(t *testing.T, room string, nodes ...*rooms.Manager) []*rooms.Subscription {
	t.Helper()
	var subs []*rooms.Subscription
	for _, n := range nodes {
		sub, err := n.Subscribe(room, rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Close)
		subs = append(subs, sub)
	}
	return subs
}

// deliveredInOrder fails t unless each subscription delivers the room's
// messages 1 to n, in order, each once.
func deliveredInOrder(t *testing.T, subs []*rooms.Subscription, n int) {
	t.Helper()
	for i, sub := range subs {
		for j, id := range storetest.IDs(t, sub, n) {
			if _, seq, _ := rooms.ParseID(id); seq != uint64(j+1) {
				t.Fatalf("node %d delivered %s at position %d: out of order, repeated or skipped", i, id, j)
			}
		}
	}
}
