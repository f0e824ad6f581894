package rooms

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkSubmit measures one submit to a room: id, history, the frame
// encoded once, and its fan-out to the room's subscribers.
func BenchmarkSubmit(b *testing.B) {
	for _, n := range []int{0, 100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			m := New(Config{History: 1000, Buffer: 1 << 20})
			defer m.Close()
			for range n {
				s, err := m.Subscribe("lobby", Position{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.Submit("lobby", Post{User: "alice", Text: "hello, world"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKeyMemory reports the heap that a full idempotency key budget
// holds, per key, with 64-byte keys spread over 100 rooms.
func BenchmarkKeyMemory(b *testing.B) {
	const keys = DefaultMaxKeys
	for b.Loop() {
		m := New(Config{History: 0, Buffer: 1})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range keys {
			key := fmt.Sprintf("%064d", i)
			// 200 authors: one author keeps at most maxKeysPerScope.
			post := Post{User: "alice", Text: "hello", Key: key, Scope: fmt.Sprint("client-", i%200)}
			if _, _, err := m.Submit(fmt.Sprintf("room-%d", i%100), post); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if keysOf(m).Len() != keys {
			b.Fatalf("%d keys kept, want %d", keysOf(m).Len(), keys)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/keys, "B/key")
		m.Close()
	}
}

// BenchmarkPresence measures what presence adds in a room of 10,000
// streams that all watch presence: a stream that opens and closes, named or
// anonymous (the difference is the join/leave bookkeeping), and one
// presence event queued to every watcher, which a room sends at most once a
// second.
func BenchmarkPresence(b *testing.B) {
	streams := 10000
	if raceEnabled {
		// Every watcher that joins is told who is there: setting up a
		// room of 10,000 takes minutes under the race detector.
		streams = 500
	}
	setup := func(b *testing.B) (*Manager, *room) {
		m := New(Config{History: 10, Buffer: 16})
		b.Cleanup(func() { m.Close() })
		for i := range streams {
			s, err := m.Subscribe("lobby", Position{User: fmt.Sprint("user-", i), WatchPresence: true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(s.Close)
		}
		m.mu.RLock()
		defer m.mu.RUnlock()
		return m, m.rooms["lobby"]
	}
	for _, user := range []string{"", "bob"} {
		b.Run(fmt.Sprintf("open+close/user=%q", user), func(b *testing.B) {
			m, _ := setup(b)
			b.ReportAllocs()
			for b.Loop() {
				s, err := m.Subscribe("lobby", Position{User: user}, nil)
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
	b.Run("event", func(b *testing.B) {
		_, r := setup(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r.mu.Lock()
			r.join(nil, fmt.Sprint("new-", i), false) // a join to announce
			r.mu.Unlock()
			r.announce()
		}
	})
}
