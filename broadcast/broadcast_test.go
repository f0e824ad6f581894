package broadcast

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func strs(frames [][]byte) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = string(f)
	}
	return out
}

func TestSubmit(t *testing.T) {
	tests := []struct {
		name       string
		limit      int
		submits    int
		wantFrames int
		wantErr    error
	}{
		{name: "fits", limit: 4, submits: 4, wantFrames: 4},
		{name: "one too many evicts", limit: 4, submits: 5, wantFrames: 4, wantErr: ErrEvicted},
		{name: "zero limit holds one", limit: 0, submits: 1, wantFrames: 1},
		{name: "zero limit evicts on second", limit: 0, submits: 2, wantFrames: 1, wantErr: ErrEvicted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evicted []*Subscriber[[]byte]
			var wakes int
			b := New[[]byte](func(s *Subscriber[[]byte]) { evicted = append(evicted, s) })
			s := NewSubscriber[[]byte](tt.limit, func() { wakes++ })
			if !b.Register(s) {
				t.Fatal("Register refused a new subscriber")
			}
			for i := range tt.submits {
				b.Submit(fmt.Appendf(nil, "m%d", i))
			}
			frames, err := s.Take(nil)
			if len(frames) != tt.wantFrames {
				t.Errorf("got %d frames, want %d", len(frames), tt.wantFrames)
			}
			for i, f := range strs(frames) {
				if want := fmt.Sprintf("m%d", i); f != want {
					t.Errorf("frame %d = %q, want %q", i, f, want)
				}
			}
			if err != tt.wantErr {
				t.Errorf("Take err %v, want %v", err, tt.wantErr)
			}
			wantWakes, wantEvicted := 1, 0
			if tt.wantErr == ErrEvicted {
				wantWakes, wantEvicted = 2, 1
			}
			if wakes != wantWakes || len(evicted) != wantEvicted {
				t.Errorf("woken %d times, evicted %d; want %d and %d", wakes, len(evicted), wantWakes, wantEvicted)
			}
			if tt.wantErr == ErrEvicted && b.Len() != 0 {
				t.Errorf("evicted subscriber still counted: Len() = %d", b.Len())
			}
		})
	}
}

// TestWakeOncePerBatch: a reader is woken when its queue becomes non-empty,
// not for every frame, and again after it has taken the batch.
func TestWakeOncePerBatch(t *testing.T) {
	b := New[[]byte](nil)
	var wakes int
	s := NewSubscriber[[]byte](100, func() { wakes++ })
	b.Register(s)
	for range 10 {
		b.Submit([]byte("x"))
	}
	if wakes != 1 {
		t.Fatalf("10 frames into an empty queue woke the reader %d times, want 1", wakes)
	}
	frames, _ := s.Take(nil)
	b.Submit([]byte("y"))
	if len(frames) != 10 || wakes != 2 {
		t.Errorf("took %d frames, woken %d times; want 10 and 2", len(frames), wakes)
	}
}

func TestEvictionSparesOthers(t *testing.T) {
	b := New[[]byte](nil)
	slow, fast := NewSubscriber[[]byte](1, func() {}), NewSubscriber[[]byte](10, func() {})
	b.Register(slow)
	b.Register(fast)
	for i := range 10 {
		want := 1
		if i == 0 {
			want = 2
		}
		if got := b.Submit(fmt.Appendf(nil, "%d", i)); got != want {
			t.Fatalf("Submit %d delivered to %d, want %d", i, got, want)
		}
	}
	if frames, _ := fast.Take(nil); len(frames) != 10 {
		t.Errorf("fast subscriber got %d frames, want 10", len(frames))
	}
	if _, err := slow.Take(nil); err != ErrEvicted {
		t.Error("slow subscriber was not evicted")
	}
}

func TestRegisterRules(t *testing.T) {
	b := New[[]byte](nil)
	s := NewSubscriber[[]byte](1, func() {})
	if !b.Register(s) {
		t.Fatal("first Register refused")
	}
	if b.Register(s) {
		t.Error("second Register of the same subscriber accepted")
	}
	if New[[]byte](nil).Unregister(s) {
		t.Error("Unregister from a broadcaster it never joined reported true")
	}
	if !b.Unregister(s) {
		t.Error("Unregister of a registered subscriber reported false")
	}
	if b.Unregister(s) {
		t.Error("second Unregister reported true")
	}
	if b.Register(s) {
		t.Error("an unregistered subscriber was registered again")
	}
	if _, err := s.Take(nil); err == nil || err == ErrEvicted || err == ErrClosed {
		t.Errorf("after Unregister: Take err %v, want the unregistered reason", err)
	}
}

func TestClose(t *testing.T) {
	b := New[[]byte](nil)
	subs := make([]*Subscriber[[]byte], 3)
	var wakes atomic.Int32
	for i := range subs {
		subs[i] = NewSubscriber[[]byte](4, func() { wakes.Add(1) })
		b.Register(subs[i])
	}
	b.Submit([]byte("last words"))
	b.Close()
	b.Close()
	for i, s := range subs {
		frames, err := s.Take(nil)
		if len(frames) != 1 || err != ErrClosed {
			t.Errorf("subscriber %d: frames=%q err=%v; want the queued frame and ErrClosed", i, strs(frames), err)
		}
	}
	if wakes.Load() != 6 {
		t.Errorf("woken %d times, want once for the frame and once for the close, each", wakes.Load())
	}
	if b.Register(NewSubscriber[[]byte](1, func() {})) {
		t.Error("closed broadcaster accepted a subscriber")
	}
	if n := b.Submit([]byte("x")); n != 0 {
		t.Errorf("closed broadcaster delivered to %d", n)
	}
}

// TestEvictAll: every subscriber ends with ErrEvicted after the frames it
// had queued, onEvict is not called, and the broadcaster takes new
// subscribers, which get the frames that follow.
func TestEvictAll(t *testing.T) {
	b := New[[]byte](func(*Subscriber[[]byte]) { t.Error("onEvict called by EvictAll") })
	subs := make([]*Subscriber[[]byte], 3)
	for i := range subs {
		subs[i] = NewSubscriber[[]byte](4, func() {})
		b.Register(subs[i])
	}
	b.Submit([]byte("before"))
	b.EvictAll()
	if n := b.Len(); n != 0 {
		t.Fatalf("%d subscribers after EvictAll, want 0", n)
	}
	late := NewSubscriber[[]byte](4, func() {})
	if !b.Register(late) {
		t.Fatal("a subscriber was refused after EvictAll")
	}
	if n := b.Submit([]byte("after")); n != 1 {
		t.Errorf("frame after EvictAll delivered to %d, want the new subscriber only", n)
	}
	for i, s := range subs {
		frames, err := s.Take(nil)
		if len(frames) != 1 || string(frames[0]) != "before" || err != ErrEvicted {
			t.Errorf("subscriber %d: frames=%q err=%v; want the queued frame and ErrEvicted", i, strs(frames), err)
		}
	}
	if frames, err := late.Take(nil); len(frames) != 1 || string(frames[0]) != "after" || err != nil {
		t.Errorf("new subscriber: frames=%q err=%v; want the frame after", strs(frames), err)
	}
}

// TestChurn has thousands of subscribers join and leave while frames flow.
// Every subscriber sees an in-order, gap-free run of frames from where it
// joined until it leaves or is evicted; run it with -race.
func TestChurn(t *testing.T) {
	const readers = 2000
	b := New[[]byte](nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				b.Submit(strconv.AppendInt(nil, int64(i), 10))
			}
		}
	})
	errs := make(chan error, readers)
	var readersWG sync.WaitGroup
	for r := range readers {
		readersWG.Go(func() {
			signal := NewSignal()
			s := NewSubscriber[[]byte](16, signal.Wake)
			b.Register(s)
			prev, seen := -1, 0
			var frames [][]byte
			for seen < r%300+1 {
				<-signal
				var err error
				frames, err = s.Take(frames[:0])
				for _, f := range frames {
					i, _ := strconv.Atoi(string(f))
					if prev >= 0 && i != prev+1 {
						errs <- fmt.Errorf("reader %d: frame %d after %d", r, i, prev)
						return
					}
					prev = i
					seen++
				}
				if err == ErrEvicted {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("reader %d ended with %v", r, err)
					return
				}
			}
			b.Unregister(s)
		})
	}
	readersWG.Wait()
	close(stop)
	wg.Wait()
	b.Close()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := b.Len(); n != 0 {
		t.Errorf("%d subscribers left registered", n)
	}
}

func benchmarkSubmit(b *testing.B, subscribers int) {
	br := New[[]byte](nil)
	subs := make([]*Subscriber[[]byte], subscribers)
	for i := range subs {
		subs[i] = NewSubscriber[[]byte](1, func() {})
		br.Register(subs[i])
	}
	frame := []byte("id: 1-1\nevent: message\ndata: {}\n\n")
	var taken [][]byte
	b.ReportAllocs()
	// Each round includes the readers' take, as a delivery does.
	for b.Loop() {
		br.Submit(frame)
		for _, s := range subs {
			taken, _ = s.Take(taken[:0])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
}

func BenchmarkSubmit(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchmarkSubmit(b, n) })
	}
}
