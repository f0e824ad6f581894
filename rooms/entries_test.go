package rooms

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestEntriesIncludeActions: a follower of the log reads the messages as
// their actions left them and the actions themselves, in order, from the
// oldest or after an entry, and is told when what it asked for is gone.
func TestEntriesIncludeActions(t *testing.T) {
	m := newManager(t, Config{History: 5, Buffer: 10})
	first := post(t, m, "lobby", "hello", "typo")
	if _, _, err := m.Submit("lobby", Post{User: "alice", Action: ActionEdit, Target: first[1].ID, Text: "fixed"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Submit("lobby", Post{User: "alice", Action: ActionDelete, Target: first[0].ID}); err != nil {
		t.Fatal(err)
	}
	rep, err := m.Entries("lobby", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range rep.Messages {
		got = append(got, e.Message+"/"+map[Action]string{0: "message", ActionEdit: "edit", ActionDelete: "delete"}[e.Action])
	}
	if want := []string{"/message", "fixed/message", "fixed/edit", "/delete"}; !slices.Equal(got, want) || rep.Reset {
		t.Fatalf("the log reads %q (reset %v), want %q", got, rep.Reset, want)
	}
	if !rep.Messages[0].Deleted {
		t.Error("the deleted message is not read as its tombstone")
	}
	rep, err = m.Entries("lobby", first[1].ID, 1)
	if err != nil || len(rep.Messages) != 1 || rep.Messages[0].Action != ActionEdit || rep.Reset {
		t.Fatalf("after %s: %+v, %v; want the edit alone", first[1].ID, rep, err)
	}
	post(t, m, "lobby", "a", "b", "c", "d")
	rep, err = m.Entries("lobby", first[0].ID, 100)
	if err != nil || !rep.Reset || len(rep.Messages) != 5 {
		t.Fatalf("after a trimmed entry: %d entries, reset %v, %v; want the 5 kept and reset", len(rep.Messages), rep.Reset, err)
	}
	if _, err := m.Entries("nowhere", "", 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the log of no room: %v, want ErrNotFound", err)
	}
}

// TestHooksPresenceAndBanned: the Presence hook hears each presence event
// and the Banned hook each ban put.
func TestHooksPresenceAndBanned(t *testing.T) {
	changes := make(chan PresenceChange, 4)
	bans := make(chan Ban, 1)
	m := newManager(t, Config{History: 10, Buffer: 10, Hooks: Hooks{
		Presence: func(room string, c PresenceChange) {
			if room == "lobby" {
				changes <- c
			}
		},
		Banned: func(b Ban) { bans <- b },
	}})
	s, err := m.Subscribe("lobby", Position{User: "alice"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-changes:
		if !slices.Equal(c.Joined, []string{"alice"}) || len(c.Left) != 0 {
			t.Fatalf("presence hook heard %+v, want alice joined", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the presence hook never heard alice join")
	}
	s.Close()
	b, err := m.PutBan(Ban{Room: "lobby", Subject: "user:mallory"})
	if err != nil {
		t.Fatal(err)
	}
	if got := <-bans; got.ID != b.ID {
		t.Fatalf("the ban hook heard %+v, want %+v", got, b)
	}
}
