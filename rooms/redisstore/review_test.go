package redisstore

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

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
	got, err := tryIDs(sub, 1)
	t.Logf("submit: %q, %v; subscriber on B: %v, %v", o.msg.ID, o.err, got, err)
	if o.err != nil && len(got) > 0 {
		t.Fatalf("the submit under way when its node stopped answered %v, yet B's subscriber got %v", o.err, got)
	}
}

// TestDeleteBetweenPipelinedSubmits: a room is deleted on node B while two
// submits to it, made on node A while the room was empty, are under way,
// and Redis takes the first, then the delete, then the second. The second
// makes the room again: in a new epoch, as README promises for a room of
// the same name after a delete, so no id names two messages. A's pool of
// one connection makes Redis take them in that order.
func TestDeleteBetweenPipelinedSubmits(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rooms.Config{History: 100, StoreTimeout: 5 * time.Second}
	a := nodeWith(t, &redis.Options{Addr: srv.Addr, PoolSize: 1}, cfg)
	b := node(t, srv.Addr, cfg)
	for _, n := range []*rooms.Manager{a, b} {
		sub, err := n.Subscribe("fresh", rooms.Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
	}
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
