package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/caddy-chat/caddy-chat/ratelimit"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// windowLimit is a limit of events per client per window, such as
// rate_limit: counted in this process, or, with a store that several nodes
// share, in the store, so that it holds across the nodes.
type windowLimit struct {
	local  *ratelimit.Limiter
	shared *ratelimit.Shared
}

// newWindowLimit returns a limit of limit events per window, named name
// among the limits that counter keeps, or counted here when counter is nil.
func newWindowLimit(name string, limit int, window time.Duration, counter ratelimit.SharedCounter) *windowLimit {
	if counter != nil {
		return &windowLimit{shared: ratelimit.NewShared(name, limit, window, counter)}
	}
	return &windowLimit{local: ratelimit.New(limit, window)}
}

// check counts one event of client and returns refuse's error past the
// limit. A shared counter, the redis store's, that does not answer within
// redisCallTimeout refuses the event as the store being unavailable (503):
// it would refuse the submit anyway.
func (l *windowLimit) check(ctx context.Context, client string, refuse func(retryAfter time.Duration) error) error {
	if l.local != nil {
		if ok, retry := l.local.Allow(client, time.Now()); !ok {
			return refuse(retry)
		}
		return nil
	}
	// Bounded like the store's own calls: the request's context has no
	// deadline, and the client's read timeout may be longer.
	ctx, cancel := context.WithTimeout(ctx, redisCallTimeout)
	defer cancel()
	ok, retry, err := l.shared.Allow(ctx, client)
	if err != nil {
		return fmt.Errorf("checking a limit: %w: %w", rooms.ErrUnavailable, err)
	}
	if !ok {
		return refuse(retry)
	}
	return nil
}
