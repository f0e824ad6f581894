// Package ratelimit counts events per key in fixed windows, for limits such
// as "10 posts per author per second".
package ratelimit

import (
	"sync"
	"time"
)

// Limiter allows up to a number of events per key in each window. Its methods
// are safe for concurrent use.
type Limiter struct {
	limit  int
	window time.Duration

	mu        sync.Mutex
	counts    map[string]*bucket
	nextSweep time.Time
}

type bucket struct {
	start time.Time
	n     int
}

// New returns a Limiter that allows limit events per key in each window.
func New(limit int, window time.Duration) *Limiter {
	return &Limiter{limit: limit, window: window, counts: make(map[string]*bucket)}
}

// Allow counts one event for key at now. When the key is over its limit it
// returns false and how long until its window ends.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.nextSweep) {
		l.sweep(now)
	}
	b := l.counts[key]
	if b == nil || now.Sub(b.start) >= l.window {
		b = &bucket{start: now}
		l.counts[key] = b
	}
	if b.n >= l.limit {
		return false, b.start.Add(l.window).Sub(now)
	}
	b.n++
	return true, 0
}

// sweep forgets keys whose window has ended, so that memory follows the
// number of recent authors, not of all authors ever seen.
func (l *Limiter) sweep(now time.Time) {
	for key, b := range l.counts {
		if now.Sub(b.start) >= l.window {
			delete(l.counts, key)
		}
	}
	l.nextSweep = now.Add(max(l.window, time.Second))
}

// Len returns how many keys are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.counts)
}
