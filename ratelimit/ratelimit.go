// Package ratelimit holds limits per key: events in fixed windows, for
// limits such as "10 posts per author per second", and things in use at
// once, such as "256 open streams per client".
package ratelimit

import (
	"net/netip"
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

// Counter counts things in use per key, such as open streams per client, up
// to a limit. Its methods are safe for concurrent use.
type Counter struct {
	limit int

	mu     sync.Mutex
	counts map[string]int
}

// NewCounter returns a Counter that lets each key hold up to limit at once.
func NewCounter(limit int) *Counter {
	return &Counter{limit: limit, counts: make(map[string]int)}
}

// Acquire counts one more for key and reports true, or reports false and
// counts nothing when key already holds the limit. Each true must be
// matched by one Release.
func (c *Counter) Acquire(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts[key] >= c.limit {
		return false
	}
	c.counts[key]++
	return true
}

// Release gives back one Acquire of key. A key that holds nothing is
// forgotten, so that memory follows the clients present.
func (c *Counter) Release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts[key] <= 1 {
		delete(c.counts, key)
		return
	}
	c.counts[key]--
}

// Len returns how many keys hold something.
func (c *Counter) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.counts)
}

// AddrKey names the client at addr, an IP address with or without a port,
// for per-client limits: an IPv4 address as itself, an IPv6 address by its
// /64, the smallest network a host is usually given, so that one host
// cannot take a fresh address per request. Anything else is returned as it
// is.
func AddrKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return addr
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64) // cannot fail: an IPv6 address without zone
	return p.String()
}
