// Package broadcast fans one encoded frame out to many subscribers.
//
// A Broadcaster never waits for a subscriber: every subscriber owns a bounded
// queue, and Submit only offers the frame to it. A subscriber whose queue is full
// has fallen behind by more than its queue can hold; it is evicted rather than
// allowed to slow the others down, and its reader learns why through Err. The
// caller is expected to resume such a reader from history.
//
// Frames are shared, never copied: the same byte slice goes to every queue, so a
// delivery costs one channel send and no allocation. Readers must not modify a
// frame.
package broadcast

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrEvicted is the reason a subscriber ended when its queue overflowed.
var ErrEvicted = errors.New("broadcast: subscriber fell behind and was evicted")

// ErrClosed is the reason a subscriber ended when its Broadcaster closed.
var ErrClosed = errors.New("broadcast: broadcaster closed")

// Broadcaster offers frames to a set of subscribers. Its methods are safe for
// concurrent use. The zero value is not usable; call New.
type Broadcaster struct {
	mu     sync.Mutex
	subs   []*Subscriber
	closed bool

	// onEvict, when set, runs (outside the lock) for each evicted subscriber.
	onEvict func(*Subscriber)
}

// New returns an empty, open Broadcaster. onEvict, when not nil, is called for
// every subscriber that Submit evicts, after it has been removed; it must not
// block.
func New(onEvict func(*Subscriber)) *Broadcaster {
	return &Broadcaster{onEvict: onEvict}
}

// Subscriber is one reader of a Broadcaster. Receive frames from Frames until
// it is closed, then ask Err why.
type Subscriber struct {
	queue chan []byte
	// index is the position in Broadcaster.subs while registered, else
	// notRegistered or ended. Guarded by the Broadcaster's mutex.
	index  int
	reason atomic.Pointer[error]
}

// Values of Subscriber.index outside the subscriber list. An ended subscriber's
// queue is closed, so it can never be registered again.
const (
	notRegistered = -1
	ended         = -2
)

// NewSubscriber returns a subscriber whose queue holds up to size frames
// (at least one).
func NewSubscriber(size int) *Subscriber {
	return &Subscriber{queue: make(chan []byte, max(size, 1)), index: notRegistered}
}

// Frames is the subscriber's queue. It is closed when the subscriber is
// unregistered, evicted, or its broadcaster closes; frames queued before an
// eviction or a close can still be received.
func (s *Subscriber) Frames() <-chan []byte { return s.queue }

// Err reports why the subscriber ended: ErrEvicted, ErrClosed, or nil while it
// is registered and after a plain Unregister.
func (s *Subscriber) Err() error {
	if p := s.reason.Load(); p != nil {
		return *p
	}
	return nil
}

// Evicted reports whether the subscriber was evicted. A reader checks it before
// writing what it drained, so that a client too slow to keep up is not sent
// frames it will be replayed anyway.
func (s *Subscriber) Evicted() bool { return s.Err() == ErrEvicted }

// Register adds s to the broadcaster. It reports false, and leaves s
// untouched, if the broadcaster is closed or s was registered before; a
// subscriber belongs to one broadcaster once.
func (b *Broadcaster) Register(s *Subscriber) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || s.index != notRegistered {
		return false
	}
	s.index = len(b.subs)
	b.subs = append(b.subs, s)
	return true
}

// Unregister removes s and closes its queue. It reports whether s was
// registered; a subscriber that was already evicted or closed gives false.
func (b *Broadcaster) Unregister(s *Subscriber) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.index < 0 || s.index >= len(b.subs) || b.subs[s.index] != s {
		return false
	}
	b.remove(s)
	close(s.queue)
	return true
}

// Submit offers frame to every subscriber without blocking and returns how many
// queued it. Subscribers whose queue is full are evicted.
func (b *Broadcaster) Submit(frame []byte) (delivered int) {
	var evicted []*Subscriber
	b.mu.Lock()
	for i := 0; i < len(b.subs); {
		s := b.subs[i]
		select {
		case s.queue <- frame:
			delivered++
			i++
		default:
			s.reason.Store(&ErrEvicted)
			b.remove(s) // moves the last subscriber to i; look at it next
			close(s.queue)
			evicted = append(evicted, s)
		}
	}
	b.mu.Unlock()
	if b.onEvict != nil {
		for _, s := range evicted {
			b.onEvict(s)
		}
	}
	return delivered
}

// Len returns the number of registered subscribers.
func (b *Broadcaster) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Close ends every subscriber with ErrClosed and refuses new ones. Frames
// already queued stay readable. Closing twice is harmless.
func (b *Broadcaster) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, s := range b.subs {
		s.reason.Store(&ErrClosed)
		s.index = ended
		close(s.queue)
	}
	b.subs = nil
}

// remove takes s out of subs by moving the last subscriber into its slot.
// b.mu must be held.
func (b *Broadcaster) remove(s *Subscriber) {
	last := len(b.subs) - 1
	moved := b.subs[last]
	b.subs[s.index] = moved
	moved.index = s.index
	b.subs[last] = nil
	b.subs = b.subs[:last]
	s.index = ended
}
