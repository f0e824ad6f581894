package rooms

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// gatedStore holds its first call until released, with the room locked, so
// that the submits that come meanwhile queue up in the room's inbox, and
// fails the next call when fail is set.
type gatedStore struct {
	*LocalStore
	entered, release chan struct{}
	fail             error
	batches          *[]int // the size of every call
}

func (s gatedStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	h, err := s.LocalStore.Open(ctx, room, capacity)
	return &gatedHistory{History: h, s: s}, err
}

type gatedHistory struct {
	History
	s     gatedStore
	calls int
}

func (h *gatedHistory) Start(ctx context.Context, entries []Entry) Call {
	h.calls++
	*h.s.batches = append(*h.s.batches, len(entries))
	if h.calls == 1 {
		close(h.s.entered)
		<-h.s.release
		return h.History.Start(ctx, entries)
	}
	if h.s.fail != nil {
		return failedCall{h.s.fail}
	}
	return h.History.Start(ctx, entries)
}

// failedCall is a call that the store refused.
type failedCall struct{ err error }

func (failedCall) Wait(context.Context) {}
func (c failedCall) Finish() error      { return c.err }

// queued waits until n submits wait in the room's inbox.
func queued(t *testing.T, m *Manager, room string, n int) {
	t.Helper()
	m.mu.RLock()
	r := m.rooms[room]
	m.mu.RUnlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.inboxMu.Lock()
		got := len(r.inbox)
		r.inboxMu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d submits queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type outcome struct {
	msg    Message
	repeat bool
	err    error
}

// TestBatch: submits that queue while the room stores are decided in order
// and stored with one Append: a key used twice in the batch stores one
// message, a name a verified post of the batch claims is reserved for the
// posts after it, and ids follow the order of the queue.
func TestBatch(t *testing.T) {
	for _, tt := range []struct {
		name string
		fail error
	}{
		{"stored", nil},
		{"store fails", errors.New("disk gone")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var batches []int
			store := gatedStore{LocalStore: NewMemoryStore(), entered: make(chan struct{}), release: make(chan struct{}), fail: tt.fail, batches: &batches}
			published := 0
			m := newManager(t, Config{History: 10, Buffer: 10, Store: store, Hooks: Hooks{Published: func(string, int) { published++ }}})
			first := make(chan outcome, 1)
			go func() {
				msg, repeat, err := m.Submit("lobby", Post{User: "alice", Text: "first"})
				first <- outcome{msg, repeat, err}
			}()
			<-store.entered
			posts := []Post{
				{User: "bob", Text: "keyed", Key: "k", Scope: "bob"},
				{User: "Carol", Text: "verified", Verified: true},
				{User: "bob", Text: "keyed", Key: "k", Scope: "bob"},
				{User: "carol", Text: "impostor", ReserveNames: true},
				{User: "bob", Text: "changed", Key: "k", Scope: "bob"},
			}
			got := make([]outcome, len(posts))
			var wg sync.WaitGroup
			for i, p := range posts {
				wg.Go(func() {
					msg, repeat, err := m.Submit("lobby", p)
					got[i] = outcome{msg, repeat, err}
				})
				queued(t, m, "lobby", i+1) // one at a time: the queue's order is known
			}
			close(store.release)
			wg.Wait()
			o := <-first
			if o.err != nil || ids(t, o.msg) != "1" {
				t.Fatalf("first submit: %s, %v", o.msg.ID, o.err)
			}
			if len(batches) != 2 || batches[1] != 2 {
				t.Errorf("Append batches %v, want [1 2]: the queued keyed and verified posts in one", batches)
			}
			if tt.fail != nil {
				for i, o := range got[:3] {
					if !errors.Is(o.err, ErrUnavailable) || o.repeat {
						t.Errorf("post %d after a failed Append: %+v, want ErrUnavailable", i, o)
					}
				}
				if last := m.Rooms()[0].LastID; published != 1 || last != o.msg.ID {
					t.Errorf("%d messages published, the room at %s; want 1, at %s", published, last, o.msg.ID)
				}
				return
			}
			if got[0].err != nil || got[0].repeat || got[1].err != nil {
				t.Fatalf("keyed and verified posts: %+v, %+v", got[0], got[1])
			}
			if got[2].err != nil || !got[2].repeat || got[2].msg.ID != got[0].msg.ID {
				t.Errorf("the key's second use in the batch: %+v, want a repeat of %s", got[2], got[0].msg.ID)
			}
			if !errors.Is(got[3].err, ErrNameReserved) {
				t.Errorf("unverified carol after verified Carol in the batch: %v, want ErrNameReserved", got[3].err)
			}
			if !errors.Is(got[4].err, ErrKeyReused) {
				t.Errorf("the key with another text in the batch: %v, want ErrKeyReused", got[4].err)
			}
			if published != 3 || ids(t, got[0].msg, got[1].msg) != "2,3" {
				t.Errorf("%d published, ids %s; want 3 published, keyed 2 and verified 3", published, ids(t, got[0].msg, got[1].msg))
			}
		})
	}
}

// ids returns the sequence numbers of msgs, comma-separated.
func ids(t *testing.T, msgs ...Message) string {
	t.Helper()
	out := ""
	for i, m := range msgs {
		_, seq, ok := ParseID(m.ID)
		if !ok {
			t.Fatalf("malformed id %q", m.ID)
		}
		if i > 0 {
			out += ","
		}
		out += FormatID("", seq)[1:]
	}
	return out
}

// slowStore takes a while over every call, as a disk does, so that
// batches form and writers hand over.
type slowStore struct{ *LocalStore }

func (s slowStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	h, err := s.LocalStore.Open(ctx, room, capacity)
	return slowHistory{h}, err
}

type slowHistory struct{ History }

func (h slowHistory) Start(ctx context.Context, entries []Entry) Call {
	time.Sleep(100 * time.Microsecond)
	return h.History.Start(ctx, entries)
}

// TestConcurrentSubmits: many submitters to one room, through batches and
// hand-overs, each get their own id; together the ids are 1 to n with none
// missing, each submitter's increase, and the history holds them in order.
func TestConcurrentSubmits(t *testing.T) {
	const submitters, each = 32, 100
	m := newManager(t, Config{History: submitters * each, Buffer: 10, Store: slowStore{NewMemoryStore()}})
	got := make([][]uint64, submitters)
	errs := make([]error, submitters)
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Go(func() {
			for range each {
				msg, _, err := m.Submit("lobby", Post{User: "alice", Text: "hi"})
				if err != nil {
					errs[g] = err
					return
				}
				_, seq, _ := ParseID(msg.ID)
				got[g] = append(got[g], seq)
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64]bool)
	for g, seqs := range got {
		if errs[g] != nil {
			t.Fatal(errs[g])
		}
		for i, seq := range seqs {
			if i > 0 && seq <= seqs[i-1] {
				t.Errorf("submitter %d got %d after %d", g, seq, seqs[i-1])
			}
			if seen[seq] {
				t.Errorf("id %d given twice", seq)
			}
			seen[seq] = true
		}
	}
	for seq := uint64(1); seq <= submitters*each; seq++ {
		if !seen[seq] {
			t.Errorf("id %d given to no one", seq)
		}
	}
	rep, err := m.Messages("lobby", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i, msg := range rep.Messages {
		if _, seq, _ := ParseID(msg.ID); seq != uint64(submitters*each-len(rep.Messages)+i+1) {
			t.Fatalf("history holds %s at %d", msg.ID, i)
		}
	}
}
