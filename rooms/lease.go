package rooms

import (
	"sync"
	"time"
)

// leases are the leases of a store that one process alone uses, in
// memory. Expired leases are swept as new ones are granted, so that names
// used once, such as those of events sent once, do not pile up.
type leases struct {
	mu      sync.Mutex
	held    map[string]lease
	granted int // since the last sweep
}

// lease is a holder's claim on a name until expires.
type lease struct {
	holder  string
	expires time.Time
}

// grant gives name to holder until now+ttl, unless another holder's
// lease is in force, and reports whether holder holds it.
func (l *leases) grant(name, holder string, ttl time.Duration, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[name]; ok && cur.holder != holder && now.Before(cur.expires) {
		return false
	}
	if l.held == nil {
		l.held = map[string]lease{}
	}
	if l.granted++; l.granted > len(l.held) {
		// Sweeping once per as many grants as leases held keeps the
		// cost of a grant constant on average.
		for n, cur := range l.held {
			if !now.Before(cur.expires) {
				delete(l.held, n)
			}
		}
		l.granted = 0
	}
	l.held[name] = lease{holder: holder, expires: now.Add(ttl)}
	return true
}

// release ends holder's lease of name, if it holds it.
func (l *leases) release(name, holder string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[name]; ok && cur.holder == holder {
		delete(l.held, name)
	}
}
