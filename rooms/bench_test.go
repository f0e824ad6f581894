package rooms

import (
	"fmt"
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
				if _, _, err := m.Submit("lobby", "alice", "hello, world", ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
