package chat

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// TestSweepFindsDueAndOverdueStreams: a sweep finds a heartbeat due only
// on a stream that has one, idle for the interval and not already woken
// for it, and fails only a write under way for the write timeout; a stream
// no longer watched is left alone.
func TestSweepFindsDueAndOverdueStreams(t *testing.T) {
	const heartbeat = 15 * time.Second
	s := newSweeper(heartbeat)
	t.Cleanup(s.stop)
	watched := func(wake func()) (*streamWriter, func()) {
		sw := newStreamWriter(httptest.NewRecorder())
		return sw, sw.watch(context.Background(), s, wake)
	}
	idle, _ := watched(func() {})
	quiet, _ := watched(nil) // gRPC: no heartbeat of its own
	woken, _ := watched(func() {})
	woken.beat.Store(true)
	gone, unwatch := watched(func() {})
	unwatch()
	writing, _ := watched(func() {})
	release, started := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- writing.within(func() error { close(started); <-release; return nil })
	}()
	<-started
	t.Cleanup(func() { close(release); <-done })
	start := writing.writeStart.Load()

	names := map[*streamWriter]string{idle: "idle", quiet: "quiet", woken: "woken", gone: "gone", writing: "writing"}
	for _, tt := range []struct {
		after        time.Duration
		due, overdue []string
	}{
		{heartbeat / 2, nil, nil},
		{writeTimeout, nil, []string{"writing"}},
		{heartbeat, []string{"idle"}, []string{"writing"}},
	} {
		due, overdue := s.sweep(start+int64(tt.after), nil, nil)
		named := func(sws []*streamWriter) (out []string) {
			for _, sw := range sws {
				out = append(out, names[sw])
			}
			slices.Sort(out)
			return out
		}
		if got := named(due); !slices.Equal(got, tt.due) {
			t.Errorf("%v after the write began, heartbeats due on %v, want %v", tt.after, got, tt.due)
		}
		if got := named(overdue); !slices.Equal(got, tt.overdue) {
			t.Errorf("%v after the write began, writes overdue on %v, want %v", tt.after, got, tt.overdue)
		}
	}
}

// TestSweeperForgetsRemovedStreams: streams added twice, removed in any
// order, twice over, or never added leave exactly the others swept, and
// nothing holds the removed ones.
func TestSweeperForgetsRemovedStreams(t *testing.T) {
	s := newSweeper(time.Hour)
	t.Cleanup(s.stop)
	sws := make([]*streamWriter, 5)
	for i := range sws {
		sws[i] = newStreamWriter(httptest.NewRecorder())
		s.add(sws[i])
	}
	s.add(sws[2])
	s.remove(sws[1])
	s.remove(sws[1])
	s.remove(sws[4])
	s.remove(newStreamWriter(httptest.NewRecorder()))
	s.remove(sws[0])
	s.mu.Lock()
	defer s.mu.Unlock()
	want := []*streamWriter{sws[2], sws[3]}
	if len(s.streams) != len(want) || !slices.Contains(s.streams, want[0]) || !slices.Contains(s.streams, want[1]) {
		t.Fatalf("swept %d streams after removing 3 of 5, want the other 2", len(s.streams))
	}
	for i, sw := range s.streams {
		if sw.swept != i {
			t.Errorf("stream at %d knows itself at %d", i, sw.swept)
		}
	}
	if slices.ContainsFunc(s.streams[len(s.streams):cap(s.streams)], func(sw *streamWriter) bool { return sw != nil }) {
		t.Error("a removed stream is still held past the swept ones")
	}
}

// BenchmarkSweep: one sweep of 15,000 streams, none due, as at the
// hold-h2 load between heartbeats.
func BenchmarkSweep(b *testing.B) {
	s := newSweeper(time.Hour)
	b.Cleanup(s.stop)
	for range 15000 {
		sw := newStreamWriter(httptest.NewRecorder())
		sw.wake = func() {}
		sw.lastWrite.Store(streamClock())
		s.add(sw)
	}
	var due, overdue []*streamWriter
	for b.Loop() {
		due, overdue = s.sweep(streamClock(), due[:0], overdue[:0])
	}
}
