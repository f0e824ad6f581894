package rooms

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangingStore opens every room at once but the one named hang, whose Open
// waits until release is closed or its context ends, as on a store that
// accepts a request and never answers.
type hangingStore struct {
	*LocalStore
	hang    string
	release chan struct{}
	opens   *atomic.Int32 // of hang
}

func (s hangingStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	if room == s.hang {
		s.opens.Add(1)
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.LocalStore.Open(ctx, room, capacity)
}

// within fails the test unless f returns nil within d.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s took more than %v", what, d)
	}
}

// TestOpenOutsideManagerLock: while the store does not answer the Open of
// one room, other rooms are made, listed and followed; the first two
// subscribers of the hanging room share one Open, and both get what it
// brings.
func TestOpenOutsideManagerLock(t *testing.T) {
	var opens atomic.Int32
	release := make(chan struct{})
	m := newManager(t, Config{Buffer: 10, Store: hangingStore{LocalStore: NewMemoryStore(), hang: "slow", release: release, opens: &opens}})
	// Before the Manager closes, even when the test fails.
	open := sync.OnceFunc(func() { close(release) })
	t.Cleanup(open)
	subs := make(chan *Subscription, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			sub, err := m.Subscribe("slow", Position{}, nil)
			errs <- err
			subs <- sub
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for opens.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the store was not asked to open the room")
		}
		time.Sleep(time.Millisecond)
	}
	within(t, 2*time.Second, "following another room while one opens", func() error {
		sub, err := m.Subscribe("fast", Position{}, nil)
		if err != nil {
			return err
		}
		defer sub.Close()
		if _, _, err := m.Submit("fast", Post{User: "alice", Text: "hi"}); err != nil {
			return err
		}
		if rs := m.Rooms(); len(rs) != 1 || rs[0].Name != "fast" {
			return fmt.Errorf("rooms while one opens: %v, want only fast", rs)
		}
		return nil
	})
	open()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		defer (<-subs).Close()
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("two first subscribers opened the room %d times, want once", n)
	}
}

// TestStoreTimeout: an Open that the store never answers fails the
// subscribe as unavailable after StoreTimeout, and leaves no room behind.
func TestStoreTimeout(t *testing.T) {
	var opens atomic.Int32
	m := newManager(t, Config{Store: hangingStore{LocalStore: NewMemoryStore(), hang: "slow", release: make(chan struct{}), opens: &opens}, StoreTimeout: 50 * time.Millisecond})
	within(t, 5*time.Second, "a subscribe to a room the store does not open", func() error {
		if _, err := m.Subscribe("slow", Position{}, nil); !errors.Is(err, ErrUnavailable) {
			return fmt.Errorf("subscribe: %v, want ErrUnavailable", err)
		}
		return nil
	})
	if n := m.Len(); n != 0 {
		t.Fatalf("%d rooms after a failed open, want 0", n)
	}
}

// newsStore opens sharedRings.
type newsStore struct {
	*LocalStore
	mu    sync.Mutex
	rooms map[string]*sharedRing
	gate  chan struct{} // Append in room "slow" waits for it
}

func (s *newsStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	h, _ := s.LocalStore.Open(ctx, room, capacity)
	r := &sharedRing{History: h}
	if room == "slow" {
		r.gate = s.gate
	}
	s.mu.Lock()
	s.rooms[room] = r
	s.mu.Unlock()
	return r, nil
}

func (s *newsStore) room(name string) *sharedRing {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[name]
}

// sharedRing is a shared history in memory: publish stands in for a
// message that another node stored, which Catch then delivers.
type sharedRing struct {
	History
	gate chan struct{}

	mu      sync.Mutex
	notify  func()
	pending []Message
}

func (h *sharedRing) Follow(notify func()) { h.notify = notify }

// The Manager reads the ring under the room's lock, publish writes it
// under h.mu: the ring's methods take h.mu too.

func (h *sharedRing) Last() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.History.Last()
}

func (h *sharedRing) Oldest() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.History.Oldest()
}

func (h *sharedRing) Read(ctx context.Context, after, upto uint64, limit int) ([]Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.History.Read(ctx, after, upto, limit)
}

// Start holds the room until the gate opens, as a store that does not
// answer a write would, and the call stores the entries when it finishes.
func (h *sharedRing) Start(_ context.Context, entries []Entry) Call {
	if h.gate != nil {
		<-h.gate
	}
	return sharedCall{h, entries}
}

// sharedCall is a sharedRing's call under way.
type sharedCall struct {
	h       *sharedRing
	entries []Entry
}

func (sharedCall) Wait(context.Context) {}

func (c sharedCall) Finish() error {
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range c.entries {
		if err := Append(context.Background(), h.History, c.entries[i:i+1]); err != nil {
			return err
		}
		h.pending = append(h.pending, c.entries[i].Message)
	}
	return nil
}

func (h *sharedRing) Catch() ([]Message, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.pending
	h.pending = nil
	return out, false
}

// Sync has nothing to read: what publish stores is pending already.
func (h *sharedRing) Sync(context.Context) error { return nil }

// publish stores a message as another node would, and notifies as the
// subscription connection would.
func (h *sharedRing) publish(text string) {
	h.mu.Lock()
	msg := Message{ID: FormatID(h.Epoch(), h.History.Last()+1), User: "bob", Message: text}
	_ = Append(context.Background(), h.History, []Entry{{Message: msg}})
	h.pending = append(h.pending, msg)
	h.mu.Unlock()
	h.notify()
}

// TestNewsDoesNotWaitForARoom: the subscription connection hands news to a
// room whose lock a submit holds while the store does not answer; its
// notice returns at once, and the news of another room, heard next, is
// delivered meanwhile. The busy room's news follows once its store answers.
func TestNewsDoesNotWaitForARoom(t *testing.T) {
	store := &newsStore{LocalStore: NewMemoryStore(), rooms: map[string]*sharedRing{}, gate: make(chan struct{})}
	m := newManager(t, Config{History: 10, Buffer: 10, Store: store})
	var subs []*Subscription
	for _, name := range []string{"slow", "fast"} {
		sub, err := m.Subscribe(name, Position{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Close)
		subs = append(subs, sub)
	}
	// Before the subscriptions close, even when the test fails.
	answer := sync.OnceFunc(func() { close(store.gate) })
	t.Cleanup(answer)
	submitted := make(chan error, 1)
	go func() {
		_, _, err := m.Submit("slow", Post{User: "alice", Text: "held"})
		submitted <- err
	}()
	time.Sleep(50 * time.Millisecond) // the submit takes the room's lock
	within(t, 2*time.Second, "the subscription connection's notices", func() error {
		store.room("slow").publish("from elsewhere")
		store.room("fast").publish("meanwhile")
		return nil
	})
	if got := nextTexts(t, subs[1], 1); got[0] != "meanwhile" {
		t.Fatalf("fast room delivered %q, want meanwhile", got)
	}
	answer()
	if err := <-submitted; err != nil {
		t.Fatal(err)
	}
	if got := nextTexts(t, subs[0], 2); got[0] != "from elsewhere" || got[1] != "held" {
		t.Fatalf("slow room delivered %q, want the news and then the held submit", got)
	}
}

// nextTexts returns the texts of the next n messages of sub, failing after a
// deadline.
func nextTexts(t *testing.T, sub *Subscription, n int) []string {
	t.Helper()
	var got []string
	deadline := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatalf("got %q, want %d messages", got, n)
		}
		events, err := sub.Take(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			got = append(got, e.Message.Message)
		}
	}
	return got
}

// droppingStore keeps histories in memory, whose Drop waits until release
// is closed, as on a store that is slow to delete.
type droppingStore struct {
	*LocalStore
	dropping chan struct{} // receives when a Drop begins
	release  chan struct{}
	opens    *atomic.Int32
}

func (s droppingStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	s.opens.Add(1)
	h, err := s.LocalStore.Open(ctx, room, capacity)
	return slowDrop{h, s}, err
}

type slowDrop struct {
	History
	s droppingStore
}

func (h slowDrop) Drop(ctx context.Context) error {
	h.s.dropping <- struct{}{}
	<-h.s.release
	return h.History.Drop(ctx)
}

// TestDropHoldsUpOnlyItsRoom: while the store deletes a room, other rooms
// are posted to and listed, and the deleted room is made again only once
// the store is done with it, in a new epoch.
func TestDropHoldsUpOnlyItsRoom(t *testing.T) {
	var opens atomic.Int32
	store := droppingStore{LocalStore: NewMemoryStore(), dropping: make(chan struct{}, 1), release: make(chan struct{}), opens: &opens}
	m := newManager(t, Config{History: 10, Store: store})
	release := sync.OnceFunc(func() { close(store.release) })
	t.Cleanup(release)
	first := post(t, m, "slow", "before")[0]
	deleted := make(chan error, 1)
	go func() { deleted <- m.Delete("slow") }()
	<-store.dropping
	within(t, 2*time.Second, "posting to another room while one is deleted", func() error {
		if _, _, err := m.Submit("fast", Post{User: "alice", Text: "hi"}); err != nil {
			return err
		}
		if rs := m.Rooms(); len(rs) != 1 || rs[0].Name != "fast" {
			return fmt.Errorf("rooms while one is deleted: %v, want only fast", rs)
		}
		return nil
	})
	type submitted struct {
		msg Message
		err error
	}
	again := make(chan submitted, 1)
	go func() {
		msg, _, err := m.Submit("slow", Post{User: "alice", Text: "after"})
		again <- submitted{msg, err}
	}()
	select {
	case s := <-again:
		t.Fatalf("a post made the room again before the store dropped it: %v, %v", s.msg, s.err)
	case <-time.After(50 * time.Millisecond):
	}
	opened := opens.Load()
	release()
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	s := <-again
	if s.err != nil {
		t.Fatal(s.err)
	}
	oldEpoch, _, _ := ParseID(first.ID)
	if epoch, seq, _ := ParseID(s.msg.ID); epoch == oldEpoch || seq != 1 {
		t.Errorf("the room made again has id %s, want the first of a new epoch (the old was %s)", s.msg.ID, first.ID)
	}
	if opened != 2 {
		t.Errorf("the store opened %d histories before the drop was done, want 2 (slow and fast)", opened)
	}
}
