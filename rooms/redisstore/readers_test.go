package redisstore

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// TestHistoryReadersDoNotDelaySubmits holds a room's history readers, by
// Messages and by streams opened with history, to waiting for Redis
// without holding up the room's submits (issue 21, defect 7). With 1 ms
// of latency each way and 32 readers looping, a submit's median was 100
// times what it is with no reader when readers held the room across their
// round trips; it stays within a few times that, which leaves room for the
// race detector on a loaded machine.
func TestHistoryReadersDoNotDelaySubmits(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	// Connections enough for every reader and the submits: the test
	// measures the room, not the client's pool.
	m := nodeWith(t, &redis.Options{Addr: proxy.Addr, PoolSize: 64}, rooms.Config{History: 50})
	for range 50 {
		if _, _, err := m.Submit("lobby", rooms.Post{User: "alice", Text: "before"}); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Delay(time.Millisecond)
	idle := submitMedian(t, m, 30)

	stop := make(chan struct{})
	var readers sync.WaitGroup
	for i := range 32 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if i%2 == 0 {
					if _, err := m.Messages("lobby", "", "", 50); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				sub, err := m.Subscribe("lobby", rooms.Position{History: 50}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				sub.Close()
			}
		})
	}
	// Let the readers fill the room before measuring.
	time.Sleep(50 * time.Millisecond)
	loaded := submitMedian(t, m, 30)
	close(stop)
	readers.Wait()

	t.Logf("submit median: %v with no reader, %v with 32", idle, loaded)
	if limit := 10*idle + 10*time.Millisecond; loaded > limit {
		t.Errorf("submit median with 32 history readers = %v, want at most %v (%v with none)", loaded, limit, idle)
	}
}

// submitMedian submits n messages to the lobby one after another and
// returns the median time a submit took.
func submitMedian(t *testing.T, m *rooms.Manager, n int) time.Duration {
	t.Helper()
	took := make([]time.Duration, n)
	for i := range took {
		start := time.Now()
		if _, _, err := m.Submit("lobby", rooms.Post{User: "bob", Text: "timed"}); err != nil {
			t.Fatal(err)
		}
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	return took[n/2]
}
