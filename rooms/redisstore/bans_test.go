package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// TestBanKeysExpireByThemselves: nothing of a ban outlives it in Redis:
// its key, and the sets that index it, expire with the last ban they
// hold, with no node left to clean up; a ban put for ever keeps them.
func TestBanKeysExpireByThemselves(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	s := New(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Prefix: "expiry:"})
	t.Cleanup(func() { _ = s.Close(); _ = client.Close() })
	ctx := context.Background()
	const life = 500 * time.Millisecond
	brief, err := s.PutBan(ctx, rooms.Ban{ID: "brief", Room: "lobby", Subject: "ip:192.0.2.1", Created: time.Now(), Expires: time.Now().Add(life)}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutBan(ctx, rooms.Ban{ID: "forever", Room: "hall", Subject: "ip:192.0.2.2", Created: time.Now()}, 10); err != nil {
		t.Fatal(err)
	}
	k := newBanKeys("expiry:")
	for key, want := range map[string]string{k.ban(brief.ID): "expiring", k.room("lobby"): "expiring", k.ban("forever"): "kept", k.room("hall"): "kept", k.all: "kept"} {
		ttl, err := client.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := map[bool]string{true: "expiring", false: "kept"}[ttl > 0 && ttl <= life]; got != want || ttl == -2 {
			t.Errorf("%s has a TTL of %v: want it %s", key, ttl, want)
		}
	}
	time.Sleep(life + 100*time.Millisecond)
	if n, err := client.Exists(ctx, k.ban(brief.ID), k.room("lobby")).Result(); err != nil || n != 0 {
		t.Errorf("after the ban expired %d of its keys remain (%v)", n, err)
	}
	if n, err := client.Exists(ctx, k.ban("forever"), k.room("hall")).Result(); err != nil || n != 2 {
		t.Errorf("a ban for ever kept %d of its 2 keys (%v)", n, err)
	}
}
