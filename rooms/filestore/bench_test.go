package filestore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
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
					m, s := benchManager(b, backend, rooms.Config{History: 1000, Buffer: 16})
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

// BenchmarkFileSize posts b.N messages of 200 bytes, with idempotency keys,
// to 10 rooms that keep 1000 each, and reports the file's size once the
// rooms are full (10,000 messages) and at the end: with steady traffic, the
// file stops growing once the rooms are full, as trimmed pages are reused.
// Run it with -benchtime 100000x.
func BenchmarkFileSize(b *testing.B) {
	const roomCount, history = 10, 1000
	path := filepath.Join(b.TempDir(), "history.db")
	s := openStore(b, path)
	defer s.Close()
	m := rooms.New(rooms.Config{History: history, Buffer: 16, Store: s})
	defer m.Close()
	text := strings.Repeat("x", 200)
	var full int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for r := range roomCount {
		wg.Go(func() {
			for i := r; i < b.N; i += roomCount {
				if _, _, err := m.Submit(fmt.Sprint("room", r), rooms.Post{User: "alice", Text: text, Key: fmt.Sprint("key", i), Scope: "client"}); err != nil {
					b.Error(err)
					return
				}
				if i == roomCount*history {
					full = fileSize(b, path)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if full > 0 {
		b.ReportMetric(float64(full)/1e6, "MB-full")
	}
	b.ReportMetric(float64(fileSize(b, path))/1e6, "MB-end")
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Error(err)
		return 0
	}
	return fi.Size()
}

// BenchmarkFanout reports the process CPU time per delivery, user and
// system, submit included, with one publisher posting 500 messages a second
// and 100 streams in one full room, for the memory store and the file store:
// what storing costs, spread over a room's deliveries. The rate is fixed so
// that streams wake as often with either store. For the file store it also
// reports bbolt's page writes per commit.
func BenchmarkFanout(b *testing.B) {
	const streams = 100
	for _, backend := range []string{"memory", "file"} {
		b.Run("store="+backend, func(b *testing.B) {
			const history = 1000
			m, s := benchManager(b, backend, rooms.Config{History: history, Buffer: 1 << 16})
			// A room in steady state: full, so that each message trims
			// one, as a busy room's do.
			for range history {
				if _, _, err := m.Submit("lobby", rooms.Post{User: "alice", Text: "hello, world"}); err != nil {
					b.Fatal(err)
				}
			}
			var got sync.WaitGroup
			for range streams {
				sub, err := m.Subscribe("lobby", rooms.Position{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer sub.Close()
				got.Go(func() {
					var events []*rooms.Event
					for n := 0; n < b.N; {
						<-sub.Ready()
						var err error
						events, err = sub.Take(events[:0])
						n += len(events)
						if err != nil {
							return
						}
					}
				})
			}
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			var writesBefore, commitsBefore int64
			if s != nil {
				tx := s.commit.db.Stats().TxStats
				writesBefore, commitsBefore = tx.GetWrite(), s.Stats().Commits
			}
			userBefore, sysBefore := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				<-tick.C
				if _, _, err := m.Submit("lobby", rooms.Post{User: "alice", Text: "hello, world"}); err != nil {
					b.Fatal(err)
				}
			}
			got.Wait()
			b.StopTimer()
			user, sys := cpuTime(b)
			deliveries := float64(b.N * streams)
			b.ReportMetric(float64((user+sys-userBefore-sysBefore).Nanoseconds())/deliveries, "cpu-ns/delivery")
			b.ReportMetric(float64((user-userBefore).Nanoseconds())/deliveries, "user-ns/delivery")
			b.ReportMetric(float64((sys-sysBefore).Nanoseconds())/deliveries, "sys-ns/delivery")
			if s != nil {
				tx := s.commit.db.Stats().TxStats
				b.ReportMetric(float64(tx.GetWrite()-writesBefore)/float64(s.Stats().Commits-commitsBefore), "pwrites/commit")
			}
		})
	}
}

// cpuTime returns the user and the system CPU time the process has used.
func cpuTime(b *testing.B) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// BenchmarkFdatasync is the floor under a commit's CPU: one page written
// and an fdatasync, as bbolt does twice per commit (the pages, then the
// meta page), on the disk that holds the benchmark's temporary directory,
// without bbolt. It reports the process's user and system CPU per sync.
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	userBefore, sysBefore := cpuTime(b)
	for i := 0; b.Loop(); i++ {
		if _, err := f.WriteAt(page, int64(i%64)*4096); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
	user, sys := cpuTime(b)
	b.ReportMetric(float64((user-userBefore).Nanoseconds())/float64(b.N), "user-ns/op")
	b.ReportMetric(float64((sys-sysBefore).Nanoseconds())/float64(b.N), "sys-ns/op")
}

// BenchmarkPaced reports the process CPU time and the commits per message
// when 10 rooms each post 20 messages a second, their ticks spread over the
// interval: the fan-out load of BENCHMARKS.md without its streams, so what
// storing a message costs at a rate people post at.
func BenchmarkPaced(b *testing.B) {
	const roomCount, rate = 10, 20
	for _, backend := range []string{"memory", "file"} {
		b.Run("store="+backend, func(b *testing.B) {
			m, s := benchManager(b, backend, rooms.Config{History: 100, Buffer: 16})
			var commitsBefore int64
			if s != nil {
				commitsBefore = s.Stats().Commits
			}
			userBefore, sysBefore := cpuTime(b)
			b.ResetTimer()
			var wg sync.WaitGroup
			interval := time.Second / rate
			for r := range roomCount {
				wg.Go(func() {
					time.Sleep(time.Duration(rand.Int64N(int64(interval))))
					tick := time.NewTicker(interval)
					defer tick.Stop()
					for i := r; i < b.N; i += roomCount {
						<-tick.C
						if _, _, err := m.Submit(fmt.Sprint("room", r), rooms.Post{User: "alice", Text: "hello, world"}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			user, sys := cpuTime(b)
			b.ReportMetric(float64((user+sys-userBefore-sysBefore).Microseconds())/float64(b.N), "cpu-µs/msg")
			if s != nil {
				b.ReportMetric(float64(s.Stats().Commits-commitsBefore)/float64(b.N), "commits/msg")
			}
		})
	}
}

// benchManager returns a Manager on the backend, "memory" or "file" (a new
// file, also returned), both closed when b ends.
func benchManager(b *testing.B, backend string, cfg rooms.Config) (*rooms.Manager, *Store) {
	var s *Store
	if backend == "file" {
		s = openStore(b, filepath.Join(b.TempDir(), "history.db"))
		b.Cleanup(func() { s.Close() })
		cfg.Store = s
	}
	m := rooms.New(cfg)
	b.Cleanup(func() { m.Close() })
	return m, s
}
