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
