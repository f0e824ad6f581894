package rooms

import (
	"strconv"
	"sync/atomic"
	"time"
)

// Store keeps the history of every room. The Manager opens one History per room
// it creates and drops it with the room; a durable or shared backend implements
// these two interfaces and nothing else changes.
type Store interface {
	// Open returns the history of the named room, keeping at most capacity
	// messages. A backend that remembers a room across restarts returns its
	// old epoch and sequence; one that does not starts a new epoch, so that
	// ids from before are recognised as foreign.
	Open(room string, capacity int) (History, error)
}

// History is the retained messages of one room. The Manager serialises calls
// on one History, so implementations need no locking of their own.
type History interface {
	// Epoch names this incarnation of the room's sequence; it is the first
	// part of every id.
	Epoch() string
	// Last is the sequence number of the newest message appended, 0 if none.
	Last() uint64
	// Oldest is the sequence number of the oldest retained message, or
	// Last()+1 when none is retained.
	Oldest() uint64
	// Append stores m as sequence number Last()+1, dropping the oldest
	// message when the history is full.
	Append(m Message) error
	// After returns up to limit retained messages with a sequence number
	// greater than seq, oldest first.
	After(seq uint64, limit int) ([]Message, error)
	// Resize changes how many messages are kept, dropping the oldest ones
	// that no longer fit.
	Resize(capacity int) error
	// Drop deletes the history; the room is gone.
	Drop() error
}

// MemoryStore keeps histories in memory: they survive a Caddy reload (the
// Manager outlives it) but not a restart.
type MemoryStore struct{}

// lastEpoch makes epochs unique within the process even when rooms are
// recreated within the same microsecond.
var lastEpoch atomic.Int64

// Open returns an empty ring of capacity messages with a new epoch.
func (MemoryStore) Open(_ string, capacity int) (History, error) {
	return &ring{epoch: newEpoch(), buf: make([]Message, 0, min(capacity, 64)), capacity: capacity}, nil
}

// newEpoch returns the current time in microseconds, base 36: short, URL-safe,
// and different after a restart.
func newEpoch() string {
	now := time.Now().UnixMicro()
	for {
		last := lastEpoch.Load()
		next := max(now, last+1)
		if lastEpoch.CompareAndSwap(last, next) {
			return strconv.FormatInt(next, 36)
		}
	}
}

// ring is an in-memory History: the newest capacity messages in a circular
// buffer that grows to capacity as messages arrive.
type ring struct {
	epoch    string
	last     uint64
	buf      []Message // buf[start] is the oldest once len(buf) == capacity
	start    int
	capacity int
}

func (r *ring) Epoch() string  { return r.epoch }
func (r *ring) Last() uint64   { return r.last }
func (r *ring) Oldest() uint64 { return r.last - uint64(len(r.buf)) + 1 }

func (r *ring) Append(m Message) error {
	r.last++
	switch {
	case r.capacity == 0:
	case len(r.buf) < r.capacity:
		r.buf = append(r.buf, m)
	default:
		r.buf[r.start] = m
		r.start = (r.start + 1) % len(r.buf)
	}
	return nil
}

func (r *ring) After(seq uint64, limit int) ([]Message, error) {
	oldest := r.Oldest()
	if seq < oldest {
		seq = oldest - 1
	}
	if seq >= r.last || limit <= 0 {
		return nil, nil
	}
	skip := int(seq - (oldest - 1))
	n := min(len(r.buf)-skip, limit)
	out := make([]Message, n)
	for i := range out {
		out[i] = r.buf[(r.start+skip+i)%len(r.buf)]
	}
	return out, nil
}

func (r *ring) Resize(capacity int) error {
	kept, _ := r.After(r.last-uint64(min(len(r.buf), capacity)), capacity)
	r.buf = append(make([]Message, 0, max(len(kept), min(capacity, 64))), kept...)
	r.start = 0
	r.capacity = capacity
	return nil
}

func (r *ring) Drop() error {
	r.buf, r.start = nil, 0
	return nil
}
