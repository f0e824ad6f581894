package redisstore

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// BenchmarkSharedSubmit measures a submit on one node of two, each with a
// subscriber, and reports the Redis commands each message costs: one
// script call (its XADD, PUBLISH and the rest run inside it and count as
// commands too) and no round trip per delivery.
func BenchmarkSharedSubmit(b *testing.B) {
	srv := redistest.Start(b)
	a, other := node(b, srv.Addr, rooms.Config{}), node(b, srv.Addr, rooms.Config{})
	for _, n := range []*rooms.Manager{a, other} {
		sub, err := n.Subscribe("lobby", rooms.Position{}, func() {})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	calls := func() float64 {
		info, err := admin.Info(context.Background(), "commandstats").Result()
		if err != nil {
			b.Fatal(err)
		}
		total := 0.0
		for line := range strings.SplitSeq(info, "\n") {
			if !strings.HasPrefix(line, "cmdstat_") || strings.HasPrefix(line, "cmdstat_info:") {
				continue
			}
			_, rest, _ := strings.Cut(line, "calls=")
			n, _, _ := strings.Cut(rest, ",")
			v, _ := strconv.ParseFloat(n, 64)
			total += v
		}
		return total
	}
	before := calls()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "hello, world"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((calls()-before)/float64(b.N), "redis-cmds/msg")
}
