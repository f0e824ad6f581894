package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// act submits an action on target to room, failing t on an error.
func act(t *testing.T, p *peer, room string, a rooms.Post) rooms.Message {
	t.Helper()
	msg, _, err := p.Submit(room, a)
	if err != nil {
		t.Fatalf("%v on %s in %s: %v", a.Action, a.Target, room, err)
	}
	return msg
}

// deletion is a moderator's delete of target.
func deletion(target string) rooms.Post {
	return rooms.Post{User: "mod", Verified: true, Action: rooms.ActionDelete, Target: target, ByModerator: true}
}

// edit is its author's edit of target to text.
func edit(target, text string) rooms.Post {
	return rooms.Post{User: "alice", Action: rooms.ActionEdit, Target: target, Text: text}
}

// streamed is an event a reader received: its kind and its data.
type streamed struct {
	kind string
	data string
}

// events returns sub's replay and the events that follow it, messages
// and actions, until there are n, failing t when they do not come within
// 5 s.
func events(t *testing.T, sub *rooms.Subscription, n int) []streamed {
	t.Helper()
	var got []streamed
	add := func(es []*rooms.Event) {
		for _, e := range es {
			switch e.Kind {
			case rooms.EventMessage, rooms.EventEdit, rooms.EventDelete:
				got = append(got, streamed{e.Kind.String(), string(e.JSON())})
			}
		}
	}
	add(sub.Events)
	deadline := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatalf("got %d events %v, want %d", len(got), got, n)
		}
		es, err := sub.Take(nil)
		add(es)
		if err != nil {
			t.Fatalf("subscription ended after %v: %v", got, err)
		}
	}
	return got
}

// eraseWithin is the longest a store may keep the text of a delete in
// its data set: the file store erases it with a compaction, which deletes
// share for filestore.CompactEvery (5 s).
const eraseWithin = 10 * time.Second

// holds fails t unless what the store holds of its data set (Node.Dump),
// for a backend that can show it, contains text exactly when want is set;
// a text erased, within eraseWithin.
func holds(t *testing.T, p *peer, text string, want bool) {
	t.Helper()
	if p.node.Dump == nil {
		return
	}
	for deadline := time.Now().Add(eraseWithin); ; time.Sleep(50 * time.Millisecond) {
		got := bytes.Contains(p.node.Dump(t), []byte(text))
		if got == want {
			return
		}
		if want || time.Now().After(deadline) {
			t.Fatalf("the store holds %q: %v, want %v", text, got, want)
		}
	}
}

// actionTakesNextID: an action takes the room's next id, as a message
// does, and the message after it the one after.
func actionTakesNextID(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	var ids issued
	m := post(t, p, "lobby", "one", "two")
	ids.add(t, m...)
	del := act(t, p, "lobby", deletion(m[0].ID))
	ed := act(t, p, "lobby", edit(m[1].ID, "deux"))
	after := post(t, p, "lobby", "three")
	ids.add(t, del, ed, after[0])
	if _, seq, _ := rooms.ParseID(after[0].ID); seq != 5 {
		t.Fatalf("the message after two messages and two actions is %s, want sequence 5", after[0].ID)
	}
	if del.Target != m[0].ID || del.Action != rooms.ActionDelete {
		t.Fatalf("the delete was answered as %+v", del)
	}
}

// deleteErases: a delete reaches the room's streams as an event, leaves
// the message out of history and replays, and erases its text, and that
// of its edits, from the store itself: a reader resuming from before it
// never sees the text.
func deleteErases(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	const secret, edited = "the-erased-text-4711", "the-edited-text-0815"
	m := post(t, p, "lobby", "before", secret, "after")
	holds(t, p, secret, true) // the dump can show it
	ed := act(t, p, "lobby", edit(m[1].ID, edited))
	holds(t, p, edited, true)
	live := subscribe(t, p, "lobby", rooms.Position{LastEventID: ed.ID})
	del := act(t, p, "lobby", deletion(m[1].ID))

	got := events(t, live, 1)
	want := fmt.Sprintf(`{"id":%q,"target":%q,"by":"moderator","time":%q}`, del.ID, m[1].ID, del.Time.Format(rooms.TimeLayout))
	if got[0].kind != "delete" || got[0].data != want {
		t.Fatalf("a stream received %v, want a delete event %s", got[0], want)
	}
	if h := messages(t, p, "lobby", "", 10).Messages; texts(h) != "before,after" {
		t.Fatalf("history after the delete is %q, want before,after", texts(h))
	}
	resumed := subscribe(t, p, "lobby", rooms.Position{LastEventID: m[0].ID})
	replay := events(t, resumed, 1)
	for _, e := range replay {
		if strings.Contains(e.data, secret) || strings.Contains(e.data, edited) {
			t.Fatalf("a reader resuming before the deleted message received %v", e)
		}
	}
	if kinds := kindsOf(replay); kinds != "message,delete" {
		t.Fatalf("a reader resuming before the deleted message received %s (%v), want the message after it and the delete", kinds, replay)
	}
	holds(t, p, secret, false)
	holds(t, p, edited, false)
	gone, err := p.Lookup("lobby", m[1].ID)
	if err != nil || !gone.Deleted || gone.Message != "" {
		t.Fatalf("looking the deleted message up: %+v, %v; want its tombstone", gone, err)
	}
}

func kindsOf(es []streamed) string {
	var k []string
	for _, e := range es {
		k = append(k, e.kind)
	}
	return strings.Join(k, ",")
}

// editShowsLatest: an edit reaches streams as an event; history and
// replays show the message's latest text and when it was edited.
func editShowsLatest(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	m := post(t, p, "lobby", "helo")
	live := subscribe(t, p, "lobby", rooms.Position{LastEventID: m[0].ID})
	ed := act(t, p, "lobby", edit(m[0].ID, "hello"))
	got := events(t, live, 1)
	want := fmt.Sprintf(`{"id":%q,"target":%q,"message":"hello","time":%q}`, ed.ID, m[0].ID, ed.Time.Format(rooms.TimeLayout))
	if got[0].kind != "edit" || got[0].data != want {
		t.Fatalf("a stream received %v, want an edit event %s", got[0], want)
	}
	h := messages(t, p, "lobby", "", 10).Messages
	if len(h) != 1 || h[0].Message != "hello" || !h[0].Edited.Equal(ed.Time) {
		t.Fatalf("history after the edit is %+v, want hello edited at %v", h, ed.Time)
	}
	if b, _ := h[0].MarshalJSON(); !strings.Contains(string(b), `"edited":"`+ed.Time.Format(rooms.TimeLayout)+`"`) {
		t.Fatalf("the edited message's JSON is %s, without its edited time", b)
	}
	replay := events(t, subscribe(t, p, "lobby", rooms.Position{History: 10}), 2)
	if kindsOf(replay) != "message,edit" || !strings.Contains(replay[0].data, `"message":"hello"`) {
		t.Fatalf("a replay after the edit is %v, want the message as edited, then the edit", replay)
	}
}

// actionsSurviveRestart: a durable store keeps the actions' effects and
// their place in the sequence across a restart.
func actionsSurviveRestart(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	m := post(t, p, "lobby", "one", "two-erased-9911", "three")
	act(t, p, "lobby", edit(m[0].ID, "uno"))
	del := act(t, p, "lobby", deletion(m[1].ID))
	p.stop(t)
	p = start(t, b, rooms.Config{})
	if h := messages(t, p, "lobby", "", 10).Messages; texts(h) != "uno,three" || h[0].Edited.IsZero() {
		t.Fatalf("history after a restart is %+v, want uno (edited), three", h)
	}
	replay := events(t, subscribe(t, p, "lobby", rooms.Position{LastEventID: m[2].ID}), 2)
	if kindsOf(replay) != "edit,delete" {
		t.Fatalf("a reader resuming after a restart received %v, want the edit and the delete", replay)
	}
	if after := post(t, p, "lobby", "four"); !after[0].Time.After(time.Time{}) || seqOf(after[0].ID) != seqOf(del.ID)+1 {
		t.Fatalf("the message after a restart is %s, want the one after %s", after[0].ID, del.ID)
	}
	holds(t, p, "two-erased-9911", false)
}

func seqOf(id string) uint64 {
	_, seq, _ := rooms.ParseID(id)
	return seq
}

// actionsReachEveryNode: an action taken on one node reaches the
// streams of the others, and their history shows it.
func actionsReachEveryNode(t *testing.T, b Backend) {
	a, far := start(t, b, rooms.Config{}), start(t, b, rooms.Config{})
	m := post(t, a, "lobby", "spam", "ham")
	sub := subscribe(t, far, "lobby", rooms.Position{LastEventID: m[1].ID})
	del := act(t, a, "lobby", deletion(m[0].ID))
	if got := events(t, sub, 1); got[0].kind != "delete" || !strings.Contains(got[0].data, del.ID) {
		t.Fatalf("the other node's stream received %v, want the delete %s", got, del.ID)
	}
	if h := messages(t, far, "lobby", "", 10).Messages; texts(h) != "ham" {
		t.Fatalf("the other node's history is %q, want ham", texts(h))
	}
	// The other node acts too, on what it learned from the store.
	act(t, far, "lobby", edit(m[1].ID, "eggs"))
	eventually(t, "the first node shows the other's edit", func() error {
		if h := messages(t, a, "lobby", "", 10).Messages; texts(h) != "eggs" {
			return fmt.Errorf("history is %q", texts(h))
		}
		return nil
	})
}

// actionOnNoMessage: an action on an id the room does not hold as a
// message, unknown, an action's, or deleted already, is refused with
// ErrNoMessage and stores nothing; in a room that does not exist, with
// ErrNotFound.
func actionOnNoMessage(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	m := post(t, p, "lobby", "one")
	del := act(t, p, "lobby", deletion(m[0].ID))
	epoch, _, _ := rooms.ParseID(m[0].ID)
	for _, target := range []string{m[0].ID, del.ID, rooms.FormatID(epoch, 99), "other-1", "junk", epoch + "-01"} {
		for _, a := range []rooms.Post{deletion(target), edit(target, "x")} {
			if _, _, err := p.Submit("lobby", a); !errors.Is(err, rooms.ErrNoMessage) {
				t.Fatalf("%v on %s: %v, want ErrNoMessage", a.Action, target, err)
			}
		}
		if _, err := p.Lookup("lobby", target); target != m[0].ID && !errors.Is(err, rooms.ErrNoMessage) {
			t.Fatalf("looking %s up: %v, want ErrNoMessage", target, err)
		}
	}
	if _, _, err := p.Submit("nowhere", deletion(m[0].ID)); !errors.Is(err, rooms.ErrNotFound) {
		t.Fatalf("a delete in a room that does not exist: %v, want ErrNotFound", err)
	}
	if after := post(t, p, "lobby", "two"); seqOf(after[0].ID) != seqOf(del.ID)+1 {
		t.Fatalf("refused actions took ids: the next message is %s after %s", after[0].ID, del.ID)
	}
}

// authorshipKeptUnpublished: what a post keeps of its author is read
// back by Lookup, on every node, and is in no encoding of the message.
func authorshipKeptUnpublished(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{})
	author := rooms.Authorship{ClientKey: "ip:2001:db8:1::/64", SecretDigest: rooms.SecretDigest("s3cret")}
	msg, _, err := p.Submit("lobby", rooms.Post{User: "anon", Text: "hi", Author: author})
	if err != nil {
		t.Fatal(err)
	}
	readers := []*peer{p}
	if b.Shared {
		readers = append(readers, start(t, b, rooms.Config{}))
	}
	for i, r := range readers {
		got, err := r.Lookup("lobby", msg.ID)
		if err != nil || got.Author != author || got.Message != "hi" || got.Deleted {
			t.Fatalf("node %d looked the message up as %+v, %v; want it with its authorship", i, got, err)
		}
	}
	h := messages(t, p, "lobby", "", 10).Messages
	ev := events(t, subscribe(t, p, "lobby", rooms.Position{History: 1}), 1)
	enc, _ := h[0].MarshalJSON()
	for _, s := range []string{string(enc), ev[0].data} {
		if strings.Contains(s, "2001:db8") || strings.Contains(s, author.SecretDigest) {
			t.Fatalf("a published encoding carries the authorship: %s", s)
		}
	}
}

// erasedIsNoGap: a node that reads a deleted message back from the
// store, having been cut off when it came, delivers the delete and what
// follows, never the erased entry, and does not take it for a lost one.
func erasedIsNoGap(t *testing.T, b Backend) {
	a, far := start(t, b, rooms.Config{}), start(t, b, rooms.Config{})
	first := post(t, a, "lobby", "one")[0]
	sub := subscribe(t, far, "lobby", rooms.Position{LastEventID: first.ID})
	heal := far.node.Cut(t)
	spam := post(t, a, "lobby", "spam-erased-3141")[0]
	del := act(t, a, "lobby", deletion(spam.ID))
	heal()
	last := post(t, a, "lobby", "two")[0]
	got := events(t, sub, 2)
	if kindsOf(got) != "delete,message" || !strings.Contains(got[0].data, del.ID) || !strings.Contains(got[1].data, last.ID) {
		t.Fatalf("the node cut off delivered %v, want the delete %s and %s", got, del.ID, last.ID)
	}
}

// historyPagesPastActions: a page of history holds as many messages as
// asked for while the history has them, however many actions and erased
// messages lie between them, and paging back with before reaches the
// oldest with no gap and no message twice.
func historyPagesPastActions(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{History: 20})
	m := post(t, p, "lobby", "1", "2", "3", "4", "5", "6")
	act(t, p, "lobby", deletion(m[1].ID))
	act(t, p, "lobby", deletion(m[2].ID))
	act(t, p, "lobby", edit(m[4].ID, "five"))
	act(t, p, "lobby", deletion(m[5].ID))
	if got := texts(messages(t, p, "lobby", "", 1).Messages); got != "five" {
		t.Fatalf("the newest message, past three actions: %q, want five", got)
	}
	if got := texts(messages(t, p, "lobby", m[0].ID, 2).Messages); got != "4,five" {
		t.Fatalf("two messages after the first, past two erased: %q, want 4,five", got)
	}
	var pages []string
	before := ""
	for range 10 {
		rep, err := p.Messages("lobby", "", before, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Messages) == 0 {
			break
		}
		pages = append(pages, texts(rep.Messages))
		before = rep.Messages[0].ID
	}
	if got := strings.Join(pages, "|"); got != "five|4|1" {
		t.Fatalf("paging back one message at a time: %q, want five|4|1", got)
	}
}

// deletesAtOnce: 500 deletes sent at once, as a purge sends them, in a
// room whose history holds 4 MB, all succeed, as does a post to another
// room meanwhile; the room keeps only what was not deleted, and the store
// none of the deleted texts. A store that rewrote the room for each
// delete would hold every room up past its timeouts. (The history holds
// the deletes too: each is an entry of the log.)
func deletesAtOnce(t *testing.T, b Backend) {
	p := start(t, b, rooms.Config{History: 2000})
	pad := strings.Repeat(".", 4000)
	ids := make([]string, 1000)
	var wg sync.WaitGroup
	errs := make(chan error, len(ids)+1)
	for w := range 50 {
		wg.Go(func() {
			for i := w; i < len(ids); i += 50 {
				m, _, err := p.Submit("lobby", rooms.Post{User: "spammer", Text: fmt.Sprintf("doomed-%04d%s", i, pad)})
				if err != nil {
					errs <- err
					return
				}
				ids[i] = m.ID
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("posting: %v", err)
	default:
	}
	for _, id := range ids[:500] {
		wg.Go(func() {
			if _, _, err := p.Submit("lobby", deletion(id)); err != nil {
				errs <- fmt.Errorf("deleting %s: %w", id, err)
			}
		})
	}
	wg.Go(func() {
		if _, _, err := p.Submit("other", rooms.Post{User: "bob", Text: "meanwhile"}); err != nil {
			errs <- fmt.Errorf("posting to another room during the deletes: %w", err)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rep := messages(t, p, "lobby", "", 1000)
	if len(rep.Messages) != 500 {
		t.Fatalf("the room holds %d messages after deleting 500 of 1000, want 500", len(rep.Messages))
	}
	for _, m := range rep.Messages {
		if i := slices.Index(ids, m.ID); i < 500 {
			t.Fatalf("the room still shows %s, deleted", m.ID)
		}
	}
	holds(t, p, "doomed-0499", false)
	holds(t, p, "doomed-0500", true)
}
