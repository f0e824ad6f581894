package redisstore

import (
	"errors"
	"testing"
	"time"

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
