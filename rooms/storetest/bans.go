package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// spammer and bystander are the subjects of the bans' behaviours, keyed
// as the service keys an anonymous client and a verified one.
const (
	spammer   = "ip:192.0.2.66"
	bystander = "id:alice"
)

// putBan puts a ban on subject in room, ending after d (never for 0),
// failing t on an error.
func putBan(t *testing.T, p *peer, room, subject string, d time.Duration) rooms.Ban {
	t.Helper()
	b := rooms.Ban{Room: room, Subject: subject, Reason: "spam", By: "mod"}
	if d > 0 {
		b.Expires = time.Now().Add(d)
	}
	put, err := p.PutBan(b)
	if err != nil {
		t.Fatalf("banning %s in %s: %v", subject, room, err)
	}
	return put
}

// banIDs lists the ids of room's bans on p, failing t on an error.
func banIDs(t *testing.T, p *peer, room string) []string {
	t.Helper()
	bans, err := p.Bans(room)
	if err != nil {
		t.Fatalf("listing the bans of %s: %v", room, err)
	}
	var ids []string
	for _, b := range bans {
		ids = append(ids, b.ID)
	}
	return ids
}

// checkBanned fails t unless p holds subject banned from room as want
// says, within 5 s when within is set.
func checkBanned(t *testing.T, p *peer, room, subject string, want, within bool) {
	t.Helper()
	check := func() error {
		if _, got := p.Banned(room, subject); got != want {
			return fmt.Errorf("%s banned from %s: %v, want %v", subject, room, got, want)
		}
		return nil
	}
	if within {
		eventually(t, "a ban to reach the node", check)
		return
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
}

// bansPutListLift: a ban holds its subject out of its room, and no one
// else nor any other room; it is listed with what it was put with and its
// expiry; lifted, it holds no more and is not listed, and lifting it
// again, or through another room, finds no ban.
func bansPutListLift(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	ban := putBan(t, p, "lobby", spammer, time.Hour)
	if ban.ID == "" || ban.Created.IsZero() {
		t.Fatalf("a ban was put as %+v: want an id and a time", ban)
	}
	checkBanned(t, p, "lobby", spammer, true, false)
	checkBanned(t, p, "lobby", bystander, false, false)
	checkBanned(t, p, "other", spammer, false, false)
	got, err := p.Bans("lobby")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != ban.ID || got[0].Subject != spammer || got[0].Reason != "spam" || got[0].By != "mod" ||
		!got[0].Created.Equal(ban.Created) || !got[0].Expires.Equal(ban.Expires) {
		t.Fatalf("the lobby's bans are %+v, want %+v", got, ban)
	}
	if ids := banIDs(t, p, "other"); len(ids) != 0 {
		t.Fatalf("a room with no ban lists %v", ids)
	}
	if err := p.LiftBan("other", ban.ID); !errors.Is(err, rooms.ErrBanNotFound) {
		t.Fatalf("lifting the lobby's ban through another room: %v, want ErrBanNotFound", err)
	}
	if err := p.LiftBan("lobby", ban.ID); err != nil {
		t.Fatal(err)
	}
	checkBanned(t, p, "lobby", spammer, false, false)
	if ids := banIDs(t, p, "lobby"); len(ids) != 0 {
		t.Fatalf("after the lift the lobby lists %v", ids)
	}
	if err := p.LiftBan("lobby", ban.ID); !errors.Is(err, rooms.ErrBanNotFound) {
		t.Fatalf("lifting a lifted ban: %v, want ErrBanNotFound", err)
	}
}

// banExpiryEndsIt: a ban ends by itself when it expires: it holds no
// more, is not listed, cannot be lifted, and no longer counts towards
// the room's bans; one put forever holds on.
func banExpiryEndsIt(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{MaxBans: 2})
	const brief = 300 * time.Millisecond
	short := putBan(t, p, "lobby", spammer, brief)
	forever := putBan(t, p, "lobby", bystander, 0)
	if !forever.Expires.IsZero() {
		t.Fatalf("a ban put forever expires at %v", forever.Expires)
	}
	checkBanned(t, p, "lobby", spammer, true, false)
	time.Sleep(brief + 50*time.Millisecond)
	checkBanned(t, p, "lobby", spammer, false, false)
	checkBanned(t, p, "lobby", bystander, true, false)
	if ids := banIDs(t, p, "lobby"); len(ids) != 1 || ids[0] != forever.ID {
		t.Fatalf("after %s expired the lobby lists %v, want %s alone", short.ID, ids, forever.ID)
	}
	if err := p.LiftBan("lobby", short.ID); !errors.Is(err, rooms.ErrBanNotFound) {
		t.Fatalf("lifting an expired ban: %v, want ErrBanNotFound", err)
	}
	// The expired ban left its place: a room of two takes a second again.
	putBan(t, p, "lobby", "ip:192.0.2.67", time.Hour)
}

// banInEveryRoom: a ban of AllRooms holds its subject out of every room,
// and is listed, and lifted, as AllRooms', not as a room's.
func banInEveryRoom(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	ban := putBan(t, p, rooms.AllRooms, spammer, time.Hour)
	for _, room := range []string{"lobby", "other", "never-made"} {
		checkBanned(t, p, room, spammer, true, false)
	}
	checkBanned(t, p, "lobby", bystander, false, false)
	if ids := banIDs(t, p, "lobby"); len(ids) != 0 {
		t.Fatalf("the lobby lists %v, a ban of every room", ids)
	}
	if ids := banIDs(t, p, rooms.AllRooms); len(ids) != 1 || ids[0] != ban.ID {
		t.Fatalf("every room's bans are %v, want %s", ids, ban.ID)
	}
	if err := p.LiftBan("lobby", ban.ID); !errors.Is(err, rooms.ErrBanNotFound) {
		t.Fatalf("lifting a ban of every room through one: %v, want ErrBanNotFound", err)
	}
	if err := p.LiftBan(rooms.AllRooms, ban.ID); err != nil {
		t.Fatal(err)
	}
	checkBanned(t, p, "other", spammer, false, false)
}

// bansHoldAcrossNodes: a ban put on one node holds on every node within
// moments, one started after it too, and lifted on another node, it is
// lifted on all.
func bansHoldAcrossNodes(t *testing.T, b Backend) {
	a, other := start(t, b, rooms.Config{}), start(t, b, rooms.Config{})
	ban := putBan(t, a, "lobby", spammer, time.Hour)
	checkBanned(t, a, "lobby", spammer, true, false)
	checkBanned(t, other, "lobby", spammer, true, true)
	if ids := banIDs(t, other, "lobby"); len(ids) != 1 || ids[0] != ban.ID {
		t.Fatalf("the other node lists %v, want %s", ids, ban.ID)
	}
	late := start(t, b, rooms.Config{})
	checkBanned(t, late, "lobby", spammer, true, true)
	if err := other.LiftBan("lobby", ban.ID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{a, late} {
		checkBanned(t, p, "lobby", spammer, false, true)
	}
}

// bansSurviveRestart: a durable store holds its bans in force after a
// restart, and neither a lifted nor an expired one.
func bansSurviveRestart(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	kept := putBan(t, p, "lobby", spammer, time.Hour)
	forever := putBan(t, p, rooms.AllRooms, "ip:2001:db8::/64", 0)
	lifted := putBan(t, p, "lobby", bystander, time.Hour)
	expired := putBan(t, p, "lobby", "ip:192.0.2.67", 200*time.Millisecond)
	if err := p.LiftBan("lobby", lifted.ID); err != nil {
		t.Fatal(err)
	}
	p.stop(t)
	time.Sleep(250 * time.Millisecond)
	p = start(t, b, rooms.Config{})
	checkBanned(t, p, "lobby", spammer, true, false)
	checkBanned(t, p, "other", "ip:2001:db8::/64", true, false)
	checkBanned(t, p, "lobby", bystander, false, false)
	checkBanned(t, p, "lobby", expired.Subject, false, false)
	if ids := banIDs(t, p, "lobby"); len(ids) != 1 || ids[0] != kept.ID {
		t.Fatalf("after a restart the lobby lists %v, want %s alone", ids, kept.ID)
	}
	if ids := banIDs(t, p, rooms.AllRooms); len(ids) != 1 || ids[0] != forever.ID {
		t.Fatalf("after a restart every room's bans are %v, want %s", ids, forever.ID)
	}
}

// banCap: a room holds at most MaxBans bans in force; one more is refused
// with ErrTooManyBans and kept nowhere, while other rooms still take
// theirs, and a lift makes room for one.
func banCap(t *testing.T, b Backend) {
	const max = 3
	p := start(t, b, rooms.Config{MaxBans: max})
	var first rooms.Ban
	for i := range max {
		ban := putBan(t, p, "lobby", fmt.Sprintf("ip:192.0.2.%d", i+1), time.Hour)
		if i == 0 {
			first = ban
		}
	}
	if _, err := p.PutBan(rooms.Ban{Room: "lobby", Subject: spammer}); !errors.Is(err, rooms.ErrTooManyBans) {
		t.Fatalf("a ban past the room's %d: %v, want ErrTooManyBans", max, err)
	}
	checkBanned(t, p, "lobby", spammer, false, false)
	if ids := banIDs(t, p, "lobby"); len(ids) != max {
		t.Fatalf("the full lobby lists %d bans, want %d", len(ids), max)
	}
	putBan(t, p, "other", spammer, time.Hour)
	if err := p.LiftBan("lobby", first.ID); err != nil {
		t.Fatal(err)
	}
	putBan(t, p, "lobby", spammer, time.Hour)
}

// bansCaughtUpAfterCut: a node cut off from the others while bans are put
// and lifted holds what they hold once it is back.
func bansCaughtUpAfterCut(t *testing.T, b Backend) {
	a, far := start(t, b, rooms.Config{}), start(t, b, rooms.Config{})
	if far.node.Cut == nil {
		t.Fatal("a shared backend's node must be able to be cut off (Node.Cut)")
	}
	lifted := putBan(t, a, "lobby", bystander, time.Hour)
	checkBanned(t, far, "lobby", bystander, true, true)
	heal := far.node.Cut(t)
	if err := a.LiftBan("lobby", lifted.ID); err != nil {
		t.Fatal(err)
	}
	putBan(t, a, "lobby", spammer, time.Hour)
	heal()
	checkBanned(t, far, "lobby", spammer, true, true)
	checkBanned(t, far, "lobby", bystander, false, true)
}
