package filestore

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// BenchmarkPublishers measures acknowledged submits per second and the p99
// submit latency with 1, 16 and 256 concurrent publishers, each posting to
// a room of its own among 64 (or one room for all), for the memory store and
// the file store; for the file, also the commits (each two fdatasyncs, by
// bbolt) per message.
func BenchmarkPublishers(b *testing.B) {
	for _, backend := range []string{"memory", "file"} {
		for _, roomCount := range []int{1, 64} {
			for _, publishers := range []int{1, 16, 256} {
				b.Run(fmt.Sprintf("store=%s/rooms=%d/publishers=%d", backend, roomCount, publishers), func(b *testing.B) {
					cfg := rooms.Config{History: 1000, Buffer: 16}
					var s *Store
					if backend == "file" {
						s = openStore(b, filepath.Join(b.TempDir(), "history.db"))
						defer s.Close()
						cfg.Store = s
					}
					m := rooms.New(cfg)
					defer m.Close()
					latencies := make([][]time.Duration, publishers)
					var next sync.WaitGroup
					work := make(chan struct{}, b.N)
					for range b.N {
						work <- struct{}{}
					}
					close(work)
					b.ResetTimer()
					start := time.Now()
					for p := range publishers {
						next.Go(func() {
							room := fmt.Sprint("room", p%roomCount)
							for range work {
								t0 := time.Now()
								if _, _, err := m.Submit(room, rooms.Post{User: "alice", Text: "hello, world"}); err != nil {
									b.Error(err)
									return
								}
								latencies[p] = append(latencies[p], time.Since(t0))
							}
						})
					}
					next.Wait()
					elapsed := time.Since(start)
					b.StopTimer()
					all := slices.Concat(latencies...)
					slices.Sort(all)
					b.ReportMetric(float64(len(all))/elapsed.Seconds(), "submits/s")
					if len(all) > 0 {
						b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
					}
					if s != nil {
						st := s.Stats()
						b.ReportMetric(float64(st.Commits)/float64(len(all)), "commits/msg")
					}
				})
			}
		}
	}
}
