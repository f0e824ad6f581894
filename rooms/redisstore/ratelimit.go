package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/ratelimit"
)

// Hit counts one event for key in a fixed window of the given length, with
// one round trip: a transaction of SET NX PX, which starts the window with
// its first event, INCR, which keeps the expiry, and PTTL. Every Redis and
// Valkey version in use has these (PEXPIRE's NX flag would need Redis 7).
// The key's hash tag is the whole key, so that Redis Cluster spreads keys
// over its shards. It implements ratelimit.SharedCounter.
func (s *Store) Hit(ctx context.Context, key string, window time.Duration) (int64, time.Duration, error) {
	name := s.prefix + "rate:{" + key + "}"
	var incr *redis.IntCmd
	var ttl *redis.DurationCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, name, 0, max(window, time.Millisecond))
		incr = p.Incr(ctx, name)
		ttl = p.PTTL(ctx, name)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("counting in redis: %w", err)
	}
	return incr.Val(), max(ttl.Val(), 0), nil
}

// Interface guard
var _ ratelimit.SharedCounter = (*Store)(nil)
