package storetest

import (
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// checkPosition fails t unless p reads want under name.
func checkPosition(t *testing.T, p *peer, name, want string) {
	t.Helper()
	got, err := p.Position(name)
	if err != nil {
		t.Fatalf("reading position %q: %v", name, err)
	}
	if got != want {
		t.Fatalf("position %q is %q, want %q", name, got, want)
	}
}

// setPosition keeps value under name, failing t on an error.
func setPosition(t *testing.T, p *peer, name, value string) {
	t.Helper()
	if err := p.SetPosition(name, value); err != nil {
		t.Fatalf("setting position %q: %v", name, err)
	}
}

// lease asks p for name's lease for holder, failing t on an error.
func lease(t *testing.T, p *peer, name, holder string, ttl time.Duration) bool {
	t.Helper()
	ok, err := p.Lease(name, holder, ttl)
	if err != nil {
		t.Fatalf("leasing %q to %s: %v", name, holder, err)
	}
	return ok
}

// positionsKept: a position reads back as last set, apart from others,
// and is forgotten when set to "".
func positionsKept(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	checkPosition(t, p, "hook a lobby", "")
	setPosition(t, p, "hook a lobby", "e1-4")
	setPosition(t, p, "hook a lobby", "e1-9")
	setPosition(t, p, "hook b lobby", "e1-2")
	checkPosition(t, p, "hook a lobby", "e1-9")
	checkPosition(t, p, "hook b lobby", "e1-2")
	setPosition(t, p, "hook a lobby", "")
	checkPosition(t, p, "hook a lobby", "")
	checkPosition(t, p, "hook b lobby", "e1-2")
}

// positionsSurviveRestart: a durable store gives a position back after a
// restart, and leaves a forgotten one forgotten.
func positionsSurviveRestart(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	setPosition(t, p, "hook a lobby", "e1-7")
	setPosition(t, p, "hook a other", "e1-3")
	setPosition(t, p, "hook a other", "")
	p.stop(t)
	p = start(t, b, rooms.Config{})
	checkPosition(t, p, "hook a lobby", "e1-7")
	checkPosition(t, p, "hook a other", "")
}

// positionsSharedAcrossNodes: a position one node sets, another reads.
func positionsSharedAcrossNodes(t *testing.T, b Backend) {
	a, other := start(t, b, rooms.Config{}), start(t, b, rooms.Config{})
	setPosition(t, a, "hook a lobby", "e1-5")
	checkPosition(t, other, "hook a lobby", "e1-5")
}

// leaseOneHolder: a lease is its holder's, who renews it, until released
// or expired; meanwhile another holder is refused.
func leaseOneHolder(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	if !lease(t, p, "room lobby", "a", time.Minute) {
		t.Fatal("a free lease was refused")
	}
	if lease(t, p, "room lobby", "b", time.Minute) {
		t.Fatal("a lease in force was granted to another holder")
	}
	if !lease(t, p, "room lobby", "a", time.Minute) {
		t.Fatal("a holder could not renew its lease")
	}
	if !lease(t, p, "room other", "b", time.Minute) {
		t.Fatal("a lease of another name was refused")
	}
	if err := p.ReleaseLease(t.Context(), "room lobby", "b"); err != nil {
		t.Fatal(err)
	}
	if lease(t, p, "room lobby", "b", time.Minute) {
		t.Fatal("a release by one who does not hold the lease ended it")
	}
	if err := p.ReleaseLease(t.Context(), "room lobby", "a"); err != nil {
		t.Fatal(err)
	}
	if !lease(t, p, "room lobby", "b", 100*time.Millisecond) {
		t.Fatal("a released lease was refused")
	}
	time.Sleep(200 * time.Millisecond)
	if !lease(t, p, "room lobby", "a", time.Minute) {
		t.Fatal("an expired lease was refused")
	}
}

// leaseAcrossNodes: of two nodes, one holds a lease; it passes to the
// other once the holder stops renewing it, as when its process dies.
func leaseAcrossNodes(t *testing.T, b Backend) {
	a, other := start(t, b, rooms.Config{}), start(t, b, rooms.Config{})
	if !lease(t, a, "room lobby", "a", 300*time.Millisecond) {
		t.Fatal("a free lease was refused")
	}
	if lease(t, other, "room lobby", "b", time.Minute) {
		t.Fatal("the other node was granted a lease in force")
	}
	a.stop(t)
	deadline := time.Now().Add(2 * time.Second)
	for !lease(t, other, "room lobby", "b", time.Minute) {
		if time.Now().After(deadline) {
			t.Fatal("the lease of a node that stopped never passed on")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
