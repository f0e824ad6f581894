// Package broadcast fans one item (an event, a frame) out to many
// subscribers.
//
// A Broadcaster never waits for a subscriber: every subscriber owns a bounded
// queue, and Submit only appends the item to it. A subscriber whose queue is
// full has fallen behind by more than its queue can hold; it is evicted rather
// than allowed to slow the others down, and its reader learns why from Take.
// The caller is expected to resume such a reader from history.
//
// Items are shared, never copied: the same pointer or slice goes to every
// queue, so a delivery costs an append and no allocation. Readers must not
// modify an item. A queue takes memory only while it holds items, so idle
// subscribers cost little.
//
// Readers are woken, not polled: a subscriber's wake function runs when its
// queue goes from empty to non-empty, and the reader then takes everything
// queued at once. One wake-up serves a whole batch of items, and the reader
// may be a goroutine of its own (see Signal) or a shared writer.
package broadcast

import (
	"errors"
	"sync"
)

// ErrEvicted is the reason a subscriber ended when its queue overflowed.
var ErrEvicted = errors.New("broadcast: subscriber fell behind and was evicted")

// ErrClosed is the reason a subscriber ended when its Broadcaster closed.
var ErrClosed = errors.New("broadcast: broadcaster closed")

// errUnregistered is the reason of a subscriber that was unregistered.
var errUnregistered = errors.New("broadcast: unregistered")

// Broadcaster offers items of type T to a set of subscribers. Its methods
// are safe for concurrent use. The zero value is not usable; call New.
type Broadcaster[T any] struct {
	mu      sync.Mutex
	subs    []*Subscriber[T]
	closed  bool
	onEvict func(*Subscriber[T])
}

// New returns an empty, open Broadcaster. onEvict, when not nil, is called for
// every subscriber that Submit evicts, after it has been removed; it must not
// block.
func New[T any](onEvict func(*Subscriber[T])) *Broadcaster[T] {
	return &Broadcaster[T]{onEvict: onEvict}
}

// Subscriber is one reader of a Broadcaster.
type Subscriber[T any] struct {
	limit int
	wake  func()

	// index is the position in Broadcaster.subs while registered, else
	// notRegistered or ended. Guarded by the Broadcaster's mutex.
	index int

	mu     sync.Mutex
	queue  []T
	spare  []T   // the previous queue's array, reused by the next Take
	reason error // why it ended; nil while registered
}

// Values of Subscriber.index outside the subscriber list. An ended subscriber
// can never be registered again.
const (
	notRegistered = -1
	ended         = -2
)

// NewSubscriber returns a subscriber whose queue holds up to limit items (at
// least one). wake runs each time the queue goes from empty to non-empty, and
// once when the subscriber ends. It runs with the Broadcaster's lock held, so
// it must be quick, must not block and must not call the Broadcaster.
func NewSubscriber[T any](limit int, wake func()) *Subscriber[T] {
	return &Subscriber[T]{limit: max(limit, 1), wake: wake, index: notRegistered}
}

// Take moves every queued item to the end of dst and returns it, with the
// reason the subscriber ended: nil while it is registered, ErrEvicted,
// ErrClosed, or an internal reason after Unregister. Items queued before an
// end are still returned.
func (s *Subscriber[T]) Take(dst []T) ([]T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.queue...)
	clear(s.queue)
	s.queue, s.spare = s.spare[:0], s.queue[:0]
	if cap(s.spare) > maxKeptQueue {
		s.spare = nil // a burst is over; do not keep its memory
	}
	return dst, s.reason
}

// maxKeptQueue is the largest queue array a subscriber keeps for reuse.
const maxKeptQueue = 64

// offer queues item unless the queue is full. It reports whether it queued
// it and whether the queue was empty before.
func (s *Subscriber[T]) offer(item T) (queued, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= s.limit {
		return false, false
	}
	s.queue = append(s.queue, item)
	return true, len(s.queue) == 1
}

// end records why the subscriber ended; the caller wakes it afterwards.
func (s *Subscriber[T]) end(reason error) {
	s.mu.Lock()
	s.reason = reason
	s.mu.Unlock()
	s.index = ended
}

// Signal wakes one reader goroutine: use its Wake as a subscriber's wake
// function and wait on the channel.
type Signal chan struct{}

// NewSignal returns a Signal that remembers one wake-up.
func NewSignal() Signal { return make(Signal, 1) }

// Wake makes the channel ready, unless it already is.
func (s Signal) Wake() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// Register adds s to the broadcaster. It reports false, and leaves s
// untouched, if the broadcaster is closed or s was registered before; a
// subscriber belongs to one broadcaster once.
func (b *Broadcaster[T]) Register(s *Subscriber[T]) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || s.index != notRegistered {
		return false
	}
	s.index = len(b.subs)
	b.subs = append(b.subs, s)
	return true
}

// Unregister removes s. It reports whether s was registered; a subscriber
// that was already evicted or closed gives false.
func (b *Broadcaster[T]) Unregister(s *Subscriber[T]) bool {
	b.mu.Lock()
	if s.index < 0 || s.index >= len(b.subs) || b.subs[s.index] != s {
		b.mu.Unlock()
		return false
	}
	b.remove(s)
	s.end(errUnregistered)
	s.wake()
	b.mu.Unlock()
	return true
}

// Submit offers item to every subscriber without blocking and returns how
// many queued it. Subscribers whose queue is full are evicted.
func (b *Broadcaster[T]) Submit(item T) (delivered int) {
	var evicted []*Subscriber[T]
	b.mu.Lock()
	for i := 0; i < len(b.subs); {
		s := b.subs[i]
		queued, first := s.offer(item)
		if queued {
			delivered++
			i++
			if first {
				s.wake()
			}
			continue
		}
		b.remove(s) // moves the last subscriber to i; look at it next
		s.end(ErrEvicted)
		s.wake()
		evicted = append(evicted, s)
	}
	b.mu.Unlock()
	if b.onEvict != nil {
		for _, s := range evicted {
			b.onEvict(s)
		}
	}
	return delivered
}

// EvictAll ends every subscriber with ErrEvicted, as Submit ends one that
// fell behind, without calling onEvict: the caller has lost items that
// they were owed, and they resume from history. Items already queued stay
// readable, and new subscribers are taken.
func (b *Broadcaster[T]) EvictAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		s.end(ErrEvicted)
		s.wake()
	}
	clear(b.subs)
	b.subs = b.subs[:0]
}

// Len returns the number of registered subscribers.
func (b *Broadcaster[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Close ends every subscriber with ErrClosed and refuses new ones. Items
// already queued stay readable. Closing twice is harmless.
func (b *Broadcaster[T]) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	for _, s := range b.subs {
		s.end(ErrClosed)
		s.wake()
	}
	b.subs = nil
	b.mu.Unlock()
}

// remove takes s out of subs by moving the last subscriber into its slot.
// b.mu must be held.
func (b *Broadcaster[T]) remove(s *Subscriber[T]) {
	last := len(b.subs) - 1
	moved := b.subs[last]
	b.subs[s.index] = moved
	moved.index = s.index
	b.subs[last] = nil
	b.subs = b.subs[:last]
	s.index = ended
}
