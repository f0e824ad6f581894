package redisstore

import (
	"testing"

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
	before := commandCalls(b, srv.Addr)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := a.Submit("lobby", rooms.Post{User: "alice", Text: "hello, world"}); err != nil {
			b.Fatal(err)
		}
	}
	after := commandCalls(b, srv.Addr)
	cmds := 0
	for name, n := range after {
		if name != "info" {
			cmds += n - before[name]
		}
	}
	b.ReportMetric(float64(cmds)/float64(b.N), "redis-cmds/msg")
}
