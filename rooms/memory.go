package rooms

import (
	"context"
	"sync"
)

// NewMemoryStore returns the local engine over logs in memory: histories,
// the idempotency keys of their messages, and bans survive a Caddy reload (the
// Manager outlives it) but not a restart.
func NewMemoryStore() *LocalStore { return NewLocalStore(rings{positions: new(sync.Map)}, nil) }

// rings opens ring logs: in memory, where nothing is kept from before.
type rings struct {
	positions *sync.Map // name → value
}

func (rings) Kept(context.Context) ([]string, error) { return nil, nil }

// KeepBans keeps nothing: the engine's memory is all there is.
func (rings) KeepBans(context.Context, []Ban, []string) error { return nil }

func (r rings) Position(_ context.Context, name string) (string, error) {
	v, _ := r.positions.Load(name)
	s, _ := v.(string)
	return s, nil
}

func (r rings) SetPosition(_ context.Context, name, value string) error {
	if value == "" {
		r.positions.Delete(name)
	} else {
		r.positions.Store(name, value)
	}
	return nil
}

func (rings) OpenLog(_ context.Context, _, epoch string, capacity int) (Log, LogPosition, error) {
	return &ring{buf: make([]Message, 0, min(capacity, 64)), capacity: capacity}, LogPosition{Epoch: epoch, Oldest: 1}, nil
}

// ring is a Log in memory: the newest capacity messages in a circular
// buffer that grows to capacity as messages arrive. Its lock is for Read,
// which runs outside the room's: the engine serialises the other methods.
type ring struct {
	mu       sync.RWMutex
	last     uint64
	buf      []Message // buf[start] is the oldest once len(buf) == capacity
	start    int
	capacity int
}

// oldest is the sequence number of the oldest message held. r.mu must be
// held.
func (r *ring) oldest() uint64 { return r.last - uint64(len(r.buf)) + 1 }

func (r *ring) Append(_ context.Context, entries []Entry, _ uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		if e.Outcome != Stored {
			continue
		}
		r.last++
		if e.Message.IsAction() {
			r.apply(e.Message)
		}
		switch {
		case r.capacity == 0:
		case len(r.buf) < r.capacity:
			r.buf = append(r.buf, e.Message)
		default:
			r.buf[r.start] = e.Message
			r.start = (r.start + 1) % len(r.buf)
		}
	}
	return nil
}

// apply rewrites, in place, the entries that the action a changes (see
// Apply): the ring is the store, so the text a delete erases is gone
// once no reader holds a copy. r.mu must be held.
func (r *ring) apply(a Message) {
	for i := range r.buf {
		if m := &r.buf[i]; m.ID == a.Target || m.Target == a.Target {
			*m = Apply(*m, a)
		}
	}
}

func (r *ring) Get(_ context.Context, seq uint64) (Message, bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if msgs := r.read(seq-1, seq, 1); len(msgs) == 1 {
		return msgs[0], true, nil
	}
	return Message{}, false, nil
}

func (r *ring) Read(_ context.Context, after, upto uint64, limit int) ([]Message, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.read(after, upto, limit), nil
}

// read returns what Read does. r.mu must be held.
func (r *ring) read(after, upto uint64, limit int) []Message {
	oldest := r.oldest()
	after = max(after, oldest-1)
	upto = min(upto, r.last)
	if after >= upto || limit <= 0 {
		return nil
	}
	skip := int(after - (oldest - 1))
	n := min(int(upto-after), limit)
	out := make([]Message, n)
	for i := range out {
		out[i] = r.buf[(r.start+skip+i)%len(r.buf)]
	}
	return out
}

func (r *ring) Resize(_ context.Context, _ uint64, capacity int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.read(r.last-uint64(min(len(r.buf), capacity)), r.last, capacity)
	r.buf = append(make([]Message, 0, max(len(kept), min(capacity, 64))), kept...)
	r.start = 0
	r.capacity = capacity
	return nil
}

// Recall knows no key: the engine's index holds every key used in the
// process, which is all a ring ever saw.
func (r *ring) Recall(context.Context, Key, Message, uint64) (Recalled, error) {
	return Recalled{}, nil
}

func (r *ring) Drop(context.Context) error { return r.Close() }

func (r *ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf, r.start = nil, 0
	return nil
}
