// Package storetest is the behaviour every rooms.Store backend owes its
// users, as one suite that each backend's tests run with a Factory of
// their own: ids that rise and are never given twice, history, drop and
// close, idempotency keys, gaps, verified names, idle rooms, a lost
// reply, edits and deletes as entries of the log, bans, and the positions
// and leases of readers of the logs. It drives the public rooms.Manager,
// as Caddy does, so that it holds whatever the engine behind the Manager
// becomes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Factory returns a new, empty data set of the backend under test, for one
// subtest. Data sets may share servers but never meet. The suite calls it
// from parallel subtests.
type Factory func(t *testing.T) Backend

// Backend is one data set of a store and what the suite may do with it.
type Backend struct {
	// Open opens a store on the data set, as a starting process does.
	Open func(t *testing.T) Node
	// Durable is set when a store opened after another closed finds what
	// that one kept: a restart keeps rooms.
	Durable bool
	// Shared is set when stores open at once share the data set, as
	// Caddy nodes on one Redis do. Without it, the suite opens one store
	// at a time.
	Shared bool
	// Failover, when set, begins a failover: the data set as it is now is
	// copied, as a replica holds it, and promote makes every store, open
	// or opened later, use the copy, losing what was written in between.
	Failover func(t *testing.T) (promote func(t *testing.T))
}

// Node is a store opened on a Backend, as one process holds it.
type Node struct {
	rooms.Store
	// Close releases the store once its Manager closed; nil when there
	// is nothing to release.
	Close func() error
	// Cut, when set, cuts the store off from the data set until heal is
	// called: what it misses meanwhile it must fill in.
	Cut func(t *testing.T) (heal func())
	// Dump, when set, returns every byte the store keeps of the data set,
	// as one who reads the disk or the server would find them: a delete
	// must leave no trace of the text there.
	Dump func(t *testing.T) []byte
	// DropReply, when set, loses the answer to the store's next write to
	// room after the data set took the write, as a network may.
	DropReply func(t *testing.T, room string)
}

// Run runs the suite on the backend that open makes, each behaviour a
// subtest of its own, in parallel. A behaviour that needs what the backend
// lacks (a second node, durability, a replica, a network) is not run, and
// not reported as skipped: it is not part of that backend's contract.
func Run(t *testing.T, open Factory) {
	has := open(t) // what the backend can do, from a data set of its own
	always := func(Backend) bool { return true }
	shared := func(b Backend) bool { return b.Shared }
	for _, c := range []struct {
		name    string
		applies func(Backend) bool
		run     func(*testing.T, Backend)
	}{
		{"IDsRise", always, idsRise},
		{"IDsRiseAcrossRestart", always, idsRiseAcrossRestart},
		{"IDsRiseAcrossNodes", shared, idsRiseAcrossNodes},
		{"IDsRiseAcrossFailover", func(b Backend) bool { return b.Failover != nil }, idsRiseAcrossFailover},
		{"FreshNodeFirstAfterFailover", func(b Backend) bool { return b.Failover != nil && b.Shared }, freshNodeFirstAfterFailover},
		{"HistoryAfterBeforeAndLimit", always, historyAfterBeforeAndLimit},
		{"ReplayMeetsLiveUnderPosts", always, replayMeetsLiveUnderPosts},
		{"HistoryResizeAndTrim", always, historyResizeAndTrim},
		{"DropForgets", always, dropForgets},
		{"CloseKeeps", func(b Backend) bool { return b.Durable }, closeKeeps},
		{"IdempotencyKeys", always, idempotencyKeys},
		{"KeyedRetriesAtOnceStoreOnce", always, keyedRetriesAtOnceStoreOnce},
		{"GapsFilledInOrder", shared, gapsFilledInOrder},
		{"VerifiedNamesFromEveryDelivery", always, verifiedNamesFromEveryDelivery},
		{"IdleExpiryNeverUnderAStream", always, idleExpiryNeverUnderAStream},
		// A store that nodes share answers over a network, which may
		// lose a reply.
		{"LostReplyStoresOnce", shared, lostReplyStoresOnce},
		{"BansPutListLift", always, bansPutListLift},
		{"BanExpiryEndsIt", always, banExpiryEndsIt},
		{"BanInEveryRoom", always, banInEveryRoom},
		{"BansHoldAcrossNodes", shared, bansHoldAcrossNodes},
		{"BansCaughtUpAfterCut", shared, bansCaughtUpAfterCut},
		{"BansSurviveRestart", func(b Backend) bool { return b.Durable }, bansSurviveRestart},
		{"BanCap", always, banCap},
		{"ActionTakesNextID", always, actionTakesNextID},
		{"DeleteErases", always, deleteErases},
		{"EditShowsLatest", always, editShowsLatest},
		{"ActionsSurviveRestart", func(b Backend) bool { return b.Durable }, actionsSurviveRestart},
		{"ActionsReachEveryNode", shared, actionsReachEveryNode},
		{"ErasedIsNoGap", shared, erasedIsNoGap},
		{"ActionOnNoMessage", always, actionOnNoMessage},
		{"DeletesAtOnce", always, deletesAtOnce},
		{"HistoryPagesPastActions", always, historyPagesPastActions},
		{"AuthorshipKeptUnpublished", always, authorshipKeptUnpublished},
		{"PositionsKept", always, positionsKept},
		{"PositionsSurviveRestart", func(b Backend) bool { return b.Durable }, positionsSurviveRestart},
		{"PositionsSharedAcrossNodes", shared, positionsSharedAcrossNodes},
		{"LeaseOneHolder", always, leaseOneHolder},
		{"LeaseAcrossNodes", shared, leaseAcrossNodes},
	} {
		if !c.applies(has) {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, open(t))
		})
	}
}

// peer is a Manager on a store of the Backend, as one Caddy node runs it.
type peer struct {
	*rooms.Manager
	node Node
	cfg  rooms.Config
	once sync.Once
}

// start opens a store on b and a Manager with cfg on it, taking back the
// rooms the store remembers. A history of 10 and a buffer of 100 are the
// defaults. It stops when t ends, unless stopped before.
func start(t *testing.T, b Backend, cfg rooms.Config) *peer {
	t.Helper()
	n := b.Open(t)
	if cfg.History == 0 {
		cfg.History = 10
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 100
	}
	cfg.Store = n.Store
	m, err := rooms.Open(context.Background(), cfg)
	if err != nil {
		if n.Close != nil {
			n.Close()
		}
		t.Fatal(err)
	}
	p := &peer{Manager: m, node: n, cfg: cfg}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop closes the Manager, then its store, as a process stopping does.
func (p *peer) stop(t *testing.T) {
	t.Helper()
	p.once.Do(func() {
		err := p.Manager.Close()
		if p.node.Close != nil {
			err = errors.Join(err, p.node.Close())
		}
		if err != nil {
			t.Errorf("stopping a node: %v", err)
		}
	})
}

// configure applies change to the node's config, as a reload does.
func (p *peer) configure(change func(*rooms.Config)) {
	change(&p.cfg)
	p.Configure(p.cfg)
}

// post submits each text to room as alice, failing t on an error.
func post(t *testing.T, p *peer, room string, texts ...string) []rooms.Message {
	t.Helper()
	var out []rooms.Message
	for _, text := range texts {
		msg, _, err := p.Submit(room, rooms.Post{User: "alice", Text: text})
		if err != nil {
			t.Fatalf("posting %q to %s: %v", text, room, err)
		}
		out = append(out, msg)
	}
	return out
}

// subscribe opens a subscription that closes when t ends.
func subscribe(t *testing.T, p *peer, room string, pos rooms.Position) *rooms.Subscription {
	t.Helper()
	sub, err := p.Subscribe(room, pos, nil)
	if err != nil {
		t.Fatalf("subscribing to %s: %v", room, err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// messages returns what p answers for room after after, up to limit,
// failing t on an error.
func messages(t *testing.T, p *peer, room, after string, limit int) rooms.Replay {
	t.Helper()
	rep, err := p.Messages(room, after, "", limit)
	if err != nil {
		t.Fatalf("messages of %s after %q: %v", room, after, err)
	}
	return rep
}

// texts joins the texts of msgs with commas.
func texts(msgs []rooms.Message) string {
	var b []string
	for _, m := range msgs {
		b = append(b, m.Message)
	}
	return strings.Join(b, ",")
}

// eventually fails t unless ok holds within 5 s.
func eventually(t *testing.T, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// issued holds new ids to the contract: none is given twice, and each is
// above every id of its epoch given before it.
type issued struct {
	seen map[string]string // id → what it was given to
	top  map[string]uint64 // the highest sequence number of each epoch
}

func (s *issued) add(t *testing.T, msgs ...rooms.Message) {
	t.Helper()
	if s.seen == nil {
		s.seen, s.top = map[string]string{}, map[string]uint64{}
	}
	for _, m := range msgs {
		epoch, seq, ok := rooms.ParseID(m.ID)
		if !ok {
			t.Fatalf("%q was given the malformed id %q", m.Message, m.ID)
		}
		if first, ok := s.seen[m.ID]; ok {
			t.Fatalf("%q was given the id %s, which %q had", m.Message, m.ID, first)
		}
		if seq <= s.top[epoch] {
			t.Fatalf("%q was given the id %s, not above %s given before", m.Message, m.ID, rooms.FormatID(epoch, s.top[epoch]))
		}
		s.seen[m.ID], s.top[epoch] = m.Message, seq
	}
}

func epochOf(m rooms.Message) string {
	epoch, _, _ := rooms.ParseID(m.ID)
	return epoch
}

// idsRise: a room's ids rise within its epoch.
func idsRise(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	var ids issued
	msgs := post(t, p, "lobby", "one", "two", "three")
	ids.add(t, msgs...)
	if epochOf(msgs[0]) != epochOf(msgs[2]) {
		t.Fatalf("one room's ids %s and %s are in two epochs", msgs[0].ID, msgs[2].ID)
	}
	if _, seq, _ := rooms.ParseID(msgs[0].ID); seq != 1 {
		t.Fatalf("a new room's first id is %s, want sequence 1", msgs[0].ID)
	}
}

// idsRiseAcrossRestart: after a restart no id is given again; a durable
// store continues the room's epoch, and a reader resumes there with no
// reset, while one that forgets starts a new epoch, which tells the reader.
func idsRiseAcrossRestart(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	var ids issued
	before := post(t, p, "lobby", "one", "two")
	ids.add(t, before...)
	p.stop(t)
	p = start(t, b, rooms.Config{})
	after := post(t, p, "lobby", "three")
	ids.add(t, after...)
	rep := messages(t, p, "lobby", before[1].ID, 10)
	if !b.Durable {
		if !rep.Reset || texts(rep.Messages) != "three" {
			t.Fatalf("resuming after a restart that forgot the room: reset=%v %q, want a reset and three", rep.Reset, texts(rep.Messages))
		}
		return
	}
	if epochOf(after[0]) != epochOf(before[0]) {
		t.Fatalf("a durable store started a new epoch across a restart: %s after %s", after[0].ID, before[1].ID)
	}
	if rep.Reset || texts(rep.Messages) != "three" {
		t.Fatalf("resuming across a restart: reset=%v %q, want three", rep.Reset, texts(rep.Messages))
	}
}

// idsRiseAcrossNodes: nodes that share a room continue one sequence, and
// each delivers it whole and in order.
func idsRiseAcrossNodes(t *testing.T, b Backend) {
	nodes := []*peer{start(t, b, rooms.Config{}), start(t, b, rooms.Config{})}
	var subs []*rooms.Subscription
	for _, n := range nodes {
		subs = append(subs, subscribe(t, n, "lobby", rooms.Position{}))
	}
	var ids issued
	var want []string
	for i := range 6 {
		msg := post(t, nodes[i%2], "lobby", "m")[0]
		ids.add(t, msg)
		want = append(want, msg.ID)
	}
	if epochOf(rooms.Message{ID: want[0]}) != epochOf(rooms.Message{ID: want[5]}) {
		t.Fatalf("two nodes gave ids in two epochs: %v", want)
	}
	for i, sub := range subs {
		if got := IDs(t, sub, len(want)); !slices.Equal(got, want) {
			t.Fatalf("node %d delivered %v, want %v", i, got, want)
		}
	}
}

// idsRiseAcrossFailover: a failover to a replica that missed the last
// writes gives none of their ids again. The room starts a new epoch
// instead: its stream is ended for its reader to resume, and a reader
// resuming from an id the replica lost is told the history moved on, and
// given what the replica kept and what came after.
func idsRiseAcrossFailover(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	subs := []*rooms.Subscription{subscribe(t, p, "lobby", rooms.Position{})}
	if b.Shared {
		// A node that heard of the lost messages, and of the new
		// epoch only from the node that posts.
		subs = append(subs, subscribe(t, start(t, b, rooms.Config{}), "lobby", rooms.Position{}))
	}
	var ids issued
	ids.add(t, post(t, p, "lobby", "one", "two")...)
	promote := b.Failover(t)
	lost := post(t, p, "lobby", "three", "four")
	ids.add(t, lost...)
	for _, sub := range subs {
		IDs(t, sub, 4)
	}
	promote(t)
	var after rooms.Message
	eventually(t, "a submit after the failover", func() (err error) {
		after, _, err = p.Submit("lobby", rooms.Post{User: "alice", Text: "five"})
		return err
	})
	ids.add(t, after)
	for i, sub := range subs {
		if got, err := Receive(sub, 1); !errors.Is(err, rooms.ErrEvicted) {
			t.Fatalf("node %d: the stream that had the lost messages got %v and %v, want it ended with ErrEvicted", i, idsOf(got), err)
		}
	}
	rep := messages(t, p, "lobby", lost[1].ID, 10)
	if !rep.Reset || texts(rep.Messages) != "one,two,five" {
		t.Fatalf("resuming after %s, which the failover lost: reset=%v %q, want a reset and what the replica kept, then five", lost[1].ID, rep.Reset, texts(rep.Messages))
	}
}

// freshNodeFirstAfterFailover: when the first post after a failover that
// lost writes comes from a node that never saw them, it gives none of
// their ids again either, and drops nothing: every node ends the streams
// that had the lost messages, and a reader resuming from one, on any
// node, is told the history moved on and gets what the replica kept and
// what came after, live too.
func freshNodeFirstAfterFailover(t *testing.T, b Backend) {
	nodes := []*peer{start(t, b, rooms.Config{}), start(t, b, rooms.Config{})}
	var subs []*rooms.Subscription
	for _, n := range nodes {
		subs = append(subs, subscribe(t, n, "lobby", rooms.Position{}))
	}
	var ids issued
	ids.add(t, post(t, nodes[0], "lobby", "one", "two")...)
	promote := b.Failover(t)
	lost := post(t, nodes[0], "lobby", "three", "four")
	ids.add(t, lost...)
	for _, sub := range subs {
		IDs(t, sub, 4)
	}
	promote(t)
	fresh := start(t, b, rooms.Config{})
	var five rooms.Message
	eventually(t, "a submit on a fresh node after the failover", func() (err error) {
		five, _, err = fresh.Submit("lobby", rooms.Post{User: "alice", Text: "five"})
		return err
	})
	ids.add(t, five)
	for i, sub := range subs {
		if got, err := Receive(sub, 1); !errors.Is(err, rooms.ErrEvicted) {
			t.Fatalf("node %d: the stream that had the lost messages got %v and %v, want it ended with ErrEvicted", i, idsOf(got), err)
		}
	}
	nodes = append(nodes, fresh)
	var resumed []*rooms.Subscription
	for i, n := range nodes {
		eventually(t, fmt.Sprintf("node %d to give five after the lost %s", i, lost[1].ID), func() error {
			if rep := messages(t, n, "lobby", lost[1].ID, 10); !rep.Reset || texts(rep.Messages) != "one,two,five" {
				return fmt.Errorf("reset=%v %q, want a reset, what the replica kept, and five", rep.Reset, texts(rep.Messages))
			}
			return nil
		})
		sub := subscribe(t, n, "lobby", rooms.Position{LastEventID: lost[1].ID})
		if !sub.Reset {
			t.Fatalf("node %d: a stream resuming after the lost %s was not reset", i, lost[1].ID)
		}
		resumed = append(resumed, sub)
	}
	six := post(t, nodes[1], "lobby", "six")[0]
	ids.add(t, six)
	for i, sub := range resumed {
		got, err := Receive(sub, 4)
		if err != nil {
			t.Fatalf("node %d: the resumed stream: %v", i, err)
		}
		if texts(got) != "one,two,five,six" || got[2].ID != five.ID || got[3].ID != six.ID {
			t.Fatalf("node %d: the resumed stream delivered %q %v, want one, two, then %s and %s", i, texts(got), idsOf(got), five.ID, six.ID)
		}
	}
}

// historyAfterBeforeAndLimit: history is read after an id, up to a limit,
// the newest when no id is given, on every node alike; before an id, the
// newest limit older than it, or with an id after as well, the first limit
// between the two; a foreign id resets.
func historyAfterBeforeAndLimit(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	m := post(t, p, "lobby", "1", "2", "3", "4", "5")
	readers := []*peer{p}
	if b.Shared {
		readers = append(readers, start(t, b, rooms.Config{}))
	}
	for i, r := range readers {
		for _, c := range []struct {
			after, before string
			limit         int
			want          string
			reset         bool
		}{
			{"", "", 3, "3,4,5", false},
			{"", "", 10, "1,2,3,4,5", false},
			{m[0].ID, "", 2, "2,3", false},
			{m[1].ID, "", 10, "3,4,5", false},
			{m[4].ID, "", 10, "", false},
			{"elsewhere-3", "", 10, "1,2,3,4,5", true},
			// Paging back: the newest limit before a message.
			{"", m[4].ID, 2, "3,4", false},
			{"", m[2].ID, 10, "1,2", false},
			{"", m[0].ID, 10, "", false},
			// Between two messages: the first limit after the one.
			{m[0].ID, m[4].ID, 10, "2,3,4", false},
			{m[0].ID, m[4].ID, 2, "2,3", false},
			{m[2].ID, m[3].ID, 10, "", false},
			{"", "elsewhere-3", 10, "", true},
		} {
			rep, err := r.Messages("lobby", c.after, c.before, c.limit)
			if err != nil {
				t.Fatalf("node %d: messages after %q, before %q: %v", i, c.after, c.before, err)
			}
			if texts(rep.Messages) != c.want || rep.Reset != c.reset {
				t.Fatalf("node %d: messages after %q, before %q, limit %d: %q reset=%v; want %q reset=%v", i, c.after, c.before, c.limit, texts(rep.Messages), rep.Reset, c.want, c.reset)
			}
			if c.reset && rep.Oldest != m[0].ID {
				t.Fatalf("node %d: a reset names %q as the oldest message, want %s", i, rep.Oldest, m[0].ID)
			}
		}
		if sub := subscribe(t, r, "lobby", rooms.Position{History: 2}); texts(sub.Messages) != "4,5" {
			t.Fatalf("node %d: a stream asking for 2 of history replayed %q", i, texts(sub.Messages))
		}
		if sub := subscribe(t, r, "lobby", rooms.Position{LastEventID: m[2].ID}); texts(sub.Messages) != "4,5" || sub.Reset {
			t.Fatalf("node %d: a stream resuming after %s replayed %q reset=%v", i, m[2].ID, texts(sub.Messages), sub.Reset)
		}
		if _, err := r.Messages("nowhere", "", "", 10); !errors.Is(err, rooms.ErrNotFound) {
			t.Fatalf("node %d: messages of a room no one made: %v, want ErrNotFound", i, err)
		}
	}
}

// replayMeetsLiveUnderPosts: streams opened while messages are posted, with
// history or resuming from a message, on the node that posts and on
// another, get every message once and in order: their replay, read with
// the room released, and what came live meet with no gap and no overlap.
func replayMeetsLiveUnderPosts(t *testing.T, b Backend) {
	// The first message, then 50 from each poster.
	const n, posters = 201, 4
	cfg := rooms.Config{History: n, Buffer: 2 * n}
	p := start(t, b, cfg)
	readers := []*peer{p}
	if b.Shared {
		readers = append(readers, start(t, b, cfg))
	}
	first := post(t, p, "lobby", "first")[0]
	epoch, seq, _ := rooms.ParseID(first.ID)
	var streams sync.WaitGroup
	for _, r := range readers {
		for i := range 12 {
			streams.Go(func() {
				// Spread over the posts that follow.
				time.Sleep(time.Duration(i) * 2 * time.Millisecond)
				pos, from := rooms.Position{History: n}, seq
				if i%2 == 1 {
					pos, from = rooms.Position{LastEventID: first.ID}, seq+1
				}
				sub, err := r.Subscribe("lobby", pos, nil)
				if err != nil {
					t.Errorf("subscribing: %v", err)
					return
				}
				defer sub.Close()
				got, err := Receive(sub, n-int(from-seq))
				if err != nil {
					t.Errorf("a stream from %q: %v", pos.LastEventID, err)
					return
				}
				for k, m := range got {
					if want := rooms.FormatID(epoch, from+uint64(k)); m.ID != want {
						t.Errorf("a stream from %q got %s where %s was due, message %d of %d: a gap or an overlap", pos.LastEventID, m.ID, want, k+1, len(got))
						return
					}
				}
			})
		}
	}
	var posting sync.WaitGroup
	for range posters {
		posting.Go(func() {
			for range (n - 1) / posters {
				if _, _, err := p.Submit("lobby", rooms.Post{User: "alice", Text: "hi"}); err != nil {
					t.Errorf("posting: %v", err)
					return
				}
			}
		})
	}
	posting.Wait()
	streams.Wait()
}

// historyResizeAndTrim: a room keeps its newest History messages; a
// smaller history trims the oldest, a larger one keeps what comes, and
// what was trimmed never comes back, after a restart neither.
func historyResizeAndTrim(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{History: 5})
	m := post(t, p, "lobby", "1", "2", "3", "4", "5", "6", "7", "8")
	if got := texts(messages(t, p, "lobby", "", 10).Messages); got != "4,5,6,7,8" {
		t.Fatalf("a history of 5 after 8 messages holds %q", got)
	}
	if rep := messages(t, p, "lobby", m[0].ID, 10); !rep.Reset || rep.Oldest != m[3].ID {
		t.Fatalf("resuming after a trimmed message: reset=%v oldest=%q, want a reset and %s", rep.Reset, rep.Oldest, m[3].ID)
	}
	p.configure(func(c *rooms.Config) { c.History = 3 })
	if got := texts(messages(t, p, "lobby", "", 10).Messages); got != "6,7,8" {
		t.Fatalf("history made 3 holds %q", got)
	}
	p.configure(func(c *rooms.Config) { c.History = 6 })
	post(t, p, "lobby", "9", "10")
	if got := texts(messages(t, p, "lobby", "", 10).Messages); got != "6,7,8,9,10" {
		t.Fatalf("history made 6 again holds %q after two more messages", got)
	}
	if !b.Durable {
		return
	}
	p.stop(t)
	p = start(t, b, rooms.Config{History: 10})
	if got := texts(messages(t, p, "lobby", "", 10).Messages); got != "6,7,8,9,10" {
		t.Fatalf("after a restart with a history of 10, the room holds %q", got)
	}
}

// dropForgets: a deleted room is gone, on every node and after a restart;
// made again, it gives no id it gave before, and a reader resuming from
// an old one is told.
func dropForgets(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	var ids issued
	old := post(t, p, "lobby", "one", "two")
	ids.add(t, old...)
	var other *peer
	var there *rooms.Subscription
	if b.Shared {
		other = start(t, b, rooms.Config{})
		there = subscribe(t, other, "lobby", rooms.Position{})
	}
	if err := p.Delete("lobby"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Messages("lobby", "", "", 10); !errors.Is(err, rooms.ErrNotFound) {
		t.Fatalf("messages of a deleted room: %v, want ErrNotFound", err)
	}
	if other != nil {
		if _, err := Receive(there, 1); !errors.Is(err, rooms.ErrRoomClosed) {
			t.Fatalf("a stream on another node after the delete: %v, want ErrRoomClosed", err)
		}
		if _, err := other.Messages("lobby", "", "", 10); !errors.Is(err, rooms.ErrNotFound) {
			t.Fatalf("messages of a deleted room on another node: %v, want ErrNotFound", err)
		}
	}
	again := post(t, p, "lobby", "new")
	ids.add(t, again...)
	if rep := messages(t, p, "lobby", old[1].ID, 10); !rep.Reset || texts(rep.Messages) != "new" {
		t.Fatalf("resuming in a room made again after %s: reset=%v %q, want a reset and new", old[1].ID, rep.Reset, texts(rep.Messages))
	}
	if !b.Durable {
		return
	}
	p.stop(t)
	if other != nil {
		other.stop(t)
	}
	p = start(t, b, rooms.Config{})
	if got := texts(messages(t, p, "lobby", "", 10).Messages); got != "new" {
		t.Fatalf("after a restart the room made again holds %q, want new", got)
	}
}

// closeKeeps: a durable store gives a room back after a restart as it was:
// its messages, with their ids and times, and its epoch.
func closeKeeps(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	m := post(t, p, "lobby", "one", "two")
	p.stop(t)
	p = start(t, b, rooms.Config{})
	rep := messages(t, p, "lobby", "", 10)
	if len(rep.Messages) != 2 || rep.Reset {
		t.Fatalf("after a restart the room holds %v reset=%v, want %v", rep.Messages, rep.Reset, m)
	}
	for i, got := range rep.Messages {
		if got.ID != m[i].ID || got.Message != m[i].Message || !got.Time.Equal(m[i].Time) || got.User != m[i].User {
			t.Fatalf("after a restart message %d is %+v, was %+v", i, got, m[i])
		}
	}
}

// idempotencyKeys: a retry with its key is answered with the message
// stored first, on every node and after a restart; the same key with
// another text is refused; another author's key is another key.
func idempotencyKeys(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	retry := rooms.Post{User: "alice", Text: "once", Key: "k1", Scope: "alice"}
	reused := retry
	reused.Text = "another"
	first, repeat, err := p.Submit("lobby", retry)
	if err != nil || repeat {
		t.Fatalf("first submit: repeat=%v err=%v", repeat, err)
	}
	check := func(where string, p *peer) {
		t.Helper()
		again, repeat, err := p.Submit("lobby", retry)
		if err != nil || !repeat || again.ID != first.ID || !again.Time.Equal(first.Time) {
			t.Fatalf("retry %s: %s at %v repeat=%v err=%v; want %s at %v as a repeat", where, again.ID, again.Time, repeat, err, first.ID, first.Time)
		}
		if _, _, err := p.Submit("lobby", reused); !errors.Is(err, rooms.ErrKeyReused) {
			t.Fatalf("the key with another text %s: %v, want ErrKeyReused", where, err)
		}
	}
	check("on the same node", p)
	bob := rooms.Post{User: "bob", Text: "mine", Key: "k1", Scope: "bob"}
	if _, repeat, err := p.Submit("lobby", bob); err != nil || repeat {
		t.Fatalf("another author's key: repeat=%v err=%v; want a new message", repeat, err)
	}
	if b.Shared {
		check("on another node", start(t, b, rooms.Config{}))
	}
	if b.Durable {
		p.stop(t)
		check("after a restart", start(t, b, rooms.Config{}))
	}
}

// keyedRetriesAtOnceStoreOnce: retries of one keyed submit that arrive
// together, before any of them is stored, on one node or spread over
// every node, store one message, and every retry is answered with it: the
// store decides the key as it stores, not only the lookup before. The
// room holds one message, so a key looked up in a history of none is
// decided as well.
func keyedRetriesAtOnceStoreOnce(t *testing.T, b Backend) {
	nodes := []*peer{start(t, b, rooms.Config{History: 1})}
	if b.Shared {
		nodes = append(nodes, start(t, b, rooms.Config{History: 1}))
	}
	const retries = 16
	retry := rooms.Post{User: "alice", Text: "once", Key: "k", Scope: "alice"}
	got := make([]rooms.Message, retries)
	repeats := make([]bool, retries)
	errs := make([]error, retries)
	var wg sync.WaitGroup
	for i := range retries {
		wg.Go(func() { got[i], repeats[i], errs[i] = nodes[i%len(nodes)].Submit("lobby", retry) })
	}
	wg.Wait()
	stored := 0
	for i := range retries {
		if errs[i] != nil {
			t.Fatalf("retry %d: %v", i, errs[i])
		}
		if !repeats[i] {
			stored++
		}
		if got[i].ID != got[0].ID || !got[i].Time.Equal(got[0].Time) {
			t.Errorf("retry %d answered %s at %v, retry 0 %s at %v: want one message", i, got[i].ID, got[i].Time, got[0].ID, got[0].Time)
		}
	}
	if stored != 1 {
		t.Errorf("%d retries stored a message, want 1", stored)
	}
	for _, n := range nodes {
		post(t, n, "lobby", "after")
		if rep := messages(t, n, "lobby", "", 10); texts(rep.Messages) != "after" {
			t.Errorf("the room holds %q, want only the message after the retries", texts(rep.Messages))
		}
	}
	last := messages(t, nodes[0], "lobby", "", 1).Messages
	if _, seq, _ := rooms.ParseID(last[0].ID); seq != 1+uint64(len(nodes)) {
		t.Errorf("the last message is %s, want sequence %d: the retries took one id", last[0].ID, 1+len(nodes))
	}
}

// gapsFilledInOrder: messages a node missed while cut off from the others
// reach its streams late, in order, none skipped and none twice.
func gapsFilledInOrder(t *testing.T, b Backend) {
	a := start(t, b, rooms.Config{})
	far := start(t, b, rooms.Config{})
	if far.node.Cut == nil {
		t.Fatal("a shared backend's node must be able to be cut off (Node.Cut)")
	}
	first := post(t, a, "lobby", "one")[0]
	sub := subscribe(t, far, "lobby", rooms.Position{LastEventID: first.ID})
	heal := far.node.Cut(t)
	missed := post(t, a, "lobby", "two", "three", "four")
	heal()
	last := post(t, a, "lobby", "five")[0]
	want := append(idsOf(missed), last.ID)
	if got := IDs(t, sub, len(want)); !slices.Equal(got, want) {
		t.Fatalf("the node cut off delivered %v, want %v", got, want)
	}
}

// verifiedNamesFromEveryDelivery: once a verified author posted under a
// name, an unverified post under it is refused on every node: the one it
// was posted on, one that heard it delivered, one opened after it, and
// after a restart.
func verifiedNamesFromEveryDelivery(t *testing.T, b Backend) {
	a := start(t, b, rooms.Config{})
	claim := rooms.Post{User: "Alice", Text: "me too", ReserveNames: true}
	refused := func(where string, p *peer) {
		t.Helper()
		if _, _, err := p.Submit("lobby", claim); !errors.Is(err, rooms.ErrNameReserved) {
			t.Fatalf("an unverified post as a verified author %s: %v, want ErrNameReserved", where, err)
		}
	}
	var heard *peer
	var sub *rooms.Subscription
	if b.Shared {
		heard = start(t, b, rooms.Config{})
		sub = subscribe(t, heard, "lobby", rooms.Position{})
	}
	msg, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "hi", Verified: true})
	if err != nil {
		t.Fatal(err)
	}
	refused("on its node", a)
	if heard != nil {
		if got := IDs(t, sub, 1); got[0] != msg.ID {
			t.Fatalf("the other node delivered %v, want %s", got, msg.ID)
		}
		refused("on a node that delivered it", heard)
		refused("on a node opened after it", start(t, b, rooms.Config{}))
	}
	if b.Durable {
		a.stop(t)
		if heard != nil {
			heard.stop(t)
		}
		refused("after a restart", start(t, b, rooms.Config{}))
	}
}

// idleTimeout is the idle timeout of the idle subtest: long enough for a
// loaded machine to post in time, short enough to wait several of.
const idleTimeout = 600 * time.Millisecond

// idleExpiryNeverUnderAStream: a room with a stream open, on any node, is
// never dropped as idle, however long no one posts: the next message
// continues its ids and reaches the stream. A room with no stream is.
func idleExpiryNeverUnderAStream(t *testing.T, b Backend) {
	cfg := rooms.Config{IdleTimeout: idleTimeout}
	a := start(t, b, cfg)
	first := post(t, a, "lobby", "one")[0]
	readers := []*peer{a}
	if b.Shared {
		// A node where the room has a stream, while the poster has none.
		readers[0] = start(t, b, cfg)
	}
	sub := subscribe(t, readers[0], "lobby", rooms.Position{LastEventID: first.ID})
	post(t, a, "quiet", "alone")
	time.Sleep(4 * idleTimeout)
	second := post(t, a, "lobby", "two")[0]
	if _, seq, _ := rooms.ParseID(second.ID); epochOf(second) != epochOf(first) || seq != 2 {
		t.Fatalf("after %v with a stream and no post the room gave %s after %s: it was dropped as idle", 4*idleTimeout, second.ID, first.ID)
	}
	if got, err := TryIDs(sub, 1); err != nil || got[0] != second.ID {
		t.Fatalf("the stream got %v (%v) after the room was quiet, want %s", got, err, second.ID)
	}
	eventually(t, "a room with no stream to go when idle", func() error {
		if _, err := a.Messages("quiet", "", "", 10); !errors.Is(err, rooms.ErrNotFound) {
			return fmt.Errorf("messages of the idle room: %v, want ErrNotFound", err)
		}
		return nil
	})
}

// lostReplyStoresOnce: when the answer to a store's write is lost after the
// data set took it, the message is stored once, whatever the submit is
// answered: it is in the history once and delivered once, and with an id
// when the submit was answered with one.
func lostReplyStoresOnce(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	if p.node.DropReply == nil {
		t.Fatal("a store that nodes share has no way to lose a reply: give its Node a DropReply")
	}
	sub := subscribe(t, p, "lobby", rooms.Position{})
	opened := post(t, p, "lobby", "open")[0]
	p.node.DropReply(t, "lobby")
	msg, _, err := p.Submit("lobby", rooms.Post{User: "alice", Text: "once"})
	if err != nil && !errors.Is(err, rooms.ErrUnavailable) {
		t.Fatalf("a submit whose reply was lost: %v, want it stored or ErrUnavailable", err)
	}
	after := post(t, p, "lobby", "after")[0]
	rep := messages(t, p, "lobby", opened.ID, 10)
	if got := texts(rep.Messages); got != "once,after" {
		t.Fatalf("after a lost reply the room holds %q after open, want once,after", got)
	}
	if err == nil && rep.Messages[0].ID != msg.ID {
		t.Fatalf("the submit was answered %s, and the message stored as %s", msg.ID, rep.Messages[0].ID)
	}
	got, err := Receive(sub, 3)
	if err != nil {
		t.Fatal(err)
	}
	if texts(got) != "open,once,after" || got[2].ID != after.ID {
		t.Fatalf("the stream delivered %q %v, want open, once and after, each once", texts(got), idsOf(got))
	}
}
