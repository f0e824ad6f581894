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
	var subs []*rooms.Subscription
	for _, n := range []*rooms.Manager{a, b} {
		sub, err := n.Subscribe("lobby", rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}

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
	for i, sub := range subs {
		delivered := ids(t, sub, total)
		for j, id := range delivered {
			if _, seq, _ := rooms.ParseID(id); seq != uint64(j+1) {
				t.Fatalf("node %d delivered %s at position %d: out of order, repeated or skipped", i, id, j)
			}
		}
	}
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
	first, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "before"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe("lobby", rooms.Position{History: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if got := ids(t, sub, 1); got[0] != first.ID {
		t.Fatalf("subscriber on B got %v, want %s", got, first.ID)
	}

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
	if got := ids(t, sub, 2); got[1] != after.ID {
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
	if got := ids(t, sub, 1); !strings.HasSuffix(got[0], "-2") {
		t.Fatalf("subscriber got %v, want the timed-out message, sequence 2", got)
	}
}
