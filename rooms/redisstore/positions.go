package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Positions and leases are a key each, whose hash tag is the whole name,
// so that Redis Cluster spreads them over its shards:
//
//	<prefix>pos:{<name>}    the position's value
//	<prefix>lease:{<name>}  the holder, expiring with the lease
//
// A lease is granted or renewed, and released, by a script that checks the
// holder in the same step, so that a holder whose lease expired and went
// to another cannot renew or end the other's.
var (
	//go:embed lease.lua
	leaseScript string
	//go:embed release_lease.lua
	releaseLeaseScript string

	grantLease   = redis.NewScript(leaseScript)
	releaseLease = redis.NewScript(releaseLeaseScript)
)

func (s *Store) positionKey(name string) string { return s.prefix + "pos:{" + name + "}" }
func (s *Store) leaseKey(name string) string    { return s.prefix + "lease:{" + name + "}" }

// Position reads the position from Redis.
func (s *Store) Position(ctx context.Context, name string) (string, error) {
	v, err := s.client.Get(ctx, s.positionKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading position %q from redis: %w", name, err)
	}
	return v, nil
}

// minPositionTTL is the least a position set with an idle timeout lasts.
const minPositionTTL = 48 * time.Hour

// SetPosition writes the position to Redis, or deletes it. Redis expires
// rooms idle for the idle timeout without telling anyone, so a position
// not set again for twice that long, and at least minPositionTTL, expires
// too, rather than outlive its room forever. A position of no room, such as
// when a webhook began, is set again by its keeper in time.
func (s *Store) SetPosition(ctx context.Context, name, value string) error {
	var err error
	if value == "" {
		err = s.client.Del(ctx, s.positionKey(name)).Err()
	} else {
		var ttl time.Duration // none
		if idle := s.idleTimeout(); idle > 0 {
			ttl = max(2*idle, minPositionTTL)
		}
		err = s.client.Set(ctx, s.positionKey(name), value, ttl).Err()
	}
	if err != nil {
		return fmt.Errorf("writing position %q to redis: %w", name, err)
	}
	return nil
}

// Lease grants or renews the lease in Redis, where every node sharing the
// store sees it: it passes on ttl after its holder's last renewal.
func (s *Store) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	n, err := grantLease.Run(ctx, s.client, []string{s.leaseKey(name)}, holder, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, fmt.Errorf("leasing %q in redis: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease deletes the lease in Redis if holder holds it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if err := releaseLease.Run(ctx, s.client, []string{s.leaseKey(name)}, holder).Err(); err != nil {
		return fmt.Errorf("releasing lease %q in redis: %w", name, err)
	}
	return nil
}
