package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// SharedCounter counts events per key in fixed windows in a store that
// several processes share, such as Redis, so that a limit holds across them.
type SharedCounter interface {
	// Hit counts one event for key in key's window, which starts with
	// the first event after the last window ended and lasts window. It
	// returns the events counted in the window, this one included, and
	// the time left in it.
	Hit(ctx context.Context, key string, window time.Duration) (n int64, left time.Duration, err error)
}

// Shared allows up to a number of events per key in each window, as a
// Limiter does, counting them in a Counter that other processes share.
type Shared struct {
	limit   int
	window  time.Duration
	name    string
	counter SharedCounter
}

// NewShared returns a Shared that allows limit events per key in each
// window. name tells its keys from those of other limits in the counter:
// limits with the same name, limit and window share their counts.
func NewShared(name string, limit int, window time.Duration, c SharedCounter) *Shared {
	return &Shared{limit: limit, window: window, name: fmt.Sprintf("%s:%d:%d:", name, limit, window.Milliseconds()), counter: c}
}

// Allow counts one event for key. When the key is over its limit it returns
// false and how long until its window ends. An error means the counter did
// not answer, and nothing is known about the key.
func (s *Shared) Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error) {
	n, left, err := s.counter.Hit(ctx, s.name+key, s.window)
	if err != nil {
		return false, 0, fmt.Errorf("counting events of %s: %w", key, err)
	}
	if n > int64(s.limit) {
		return false, max(left, time.Millisecond), nil
	}
	return true, 0, nil
}
