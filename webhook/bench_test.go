package webhook

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// BenchmarkDelivery measures how many events per second one webhook
// delivers in batches of 100 to a receiver on the same machine that
// verifies each batch: b.N messages posted to 10 rooms, timed until the
// receiver holds them all.
func BenchmarkDelivery(b *testing.B) {
	r := newReceiver(b)
	n := newNode(b, rooms.NewMemoryStore(), max(b.N, 100))
	n.hook(b, r, Config{Events: []string{EventMessage}, BatchSize: 100, BatchWait: 10 * time.Millisecond}, nil)
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := n.Submit(fmt.Sprint("room", i%10), rooms.Post{User: "alice", Text: "hello"}); err != nil {
			b.Fatal(err)
		}
	}
	for len(r.got()) < b.N {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
