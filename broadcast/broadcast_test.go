package broadcast

import (
	"fmt"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// drain returns what is queued for s without blocking, and whether its queue
// has been closed.
func drain(s *Subscriber) (frames []string, closed bool) {
	for {
		select {
		case f, ok := <-s.Frames():
			if !ok {
				return frames, true
			}
			frames = append(frames, string(f))
		default:
			return frames, false
		}
	}
}

func TestSubmit(t *testing.T) {
	tests := []struct {
		name       string
		queue      int
		submits    int
		wantFrames int
		wantErr    error
		wantClosed bool
	}{
		{name: "fits", queue: 4, submits: 4, wantFrames: 4},
		{name: "one too many evicts", queue: 4, submits: 5, wantFrames: 4, wantErr: ErrEvicted, wantClosed: true},
		{name: "zero queue holds one", queue: 0, submits: 1, wantFrames: 1},
		{name: "zero queue evicts on second", queue: 0, submits: 2, wantFrames: 1, wantErr: ErrEvicted, wantClosed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evicted []*Subscriber
			b := New(func(s *Subscriber) { evicted = append(evicted, s) })
			s := NewSubscriber(tt.queue)
			if !b.Register(s) {
				t.Fatal("Register refused a new subscriber")
			}
			for i := range tt.submits {
				b.Submit(fmt.Appendf(nil, "m%d", i))
			}
			frames, closed := drain(s)
			if len(frames) != tt.wantFrames {
				t.Errorf("got %d frames, want %d", len(frames), tt.wantFrames)
			}
			for i, f := range frames {
				if want := fmt.Sprintf("m%d", i); f != want {
					t.Errorf("frame %d = %q, want %q", i, f, want)
				}
			}
			if closed != tt.wantClosed {
				t.Errorf("queue closed = %v, want %v", closed, tt.wantClosed)
			}
			if s.Err() != tt.wantErr {
				t.Errorf("Err() = %v, want %v", s.Err(), tt.wantErr)
			}
			if got, want := len(evicted), map[bool]int{false: 0, true: 1}[tt.wantErr == ErrEvicted]; got != want {
				t.Errorf("onEvict ran %d times, want %d", got, want)
			}
			if tt.wantErr == ErrEvicted && b.Len() != 0 {
				t.Errorf("evicted subscriber still counted: Len() = %d", b.Len())
			}
		})
	}
}

func TestEvictionSparesOthers(t *testing.T) {
	b := New(nil)
	slow, fast := NewSubscriber(1), NewSubscriber(10)
	b.Register(slow)
	b.Register(fast)
	for i := range 10 {
		if got, want := b.Submit(fmt.Appendf(nil, "%d", i)), map[bool]int{true: 2, false: 1}[i == 0]; got != want {
			t.Fatalf("Submit %d delivered to %d, want %d", i, got, want)
		}
	}
	if frames, _ := drain(fast); len(frames) != 10 {
		t.Errorf("fast subscriber got %d frames, want 10", len(frames))
	}
	if !slow.Evicted() {
		t.Error("slow subscriber was not evicted")
	}
}

func TestRegisterRules(t *testing.T) {
	b := New(nil)
	s := NewSubscriber(1)
	if !b.Register(s) {
		t.Fatal("first Register refused")
	}
	if b.Register(s) {
		t.Error("second Register of the same subscriber accepted")
	}
	if other := New(nil); other.Unregister(s) {
		t.Error("Unregister from a broadcaster it never joined reported true")
	}
	if !b.Unregister(s) {
		t.Error("Unregister of a registered subscriber reported false")
	}
	if b.Unregister(s) {
		t.Error("second Unregister reported true")
	}
	if b.Register(s) {
		t.Error("an unregistered subscriber (closed queue) was registered again")
	}
	if _, closed := drain(s); !closed || s.Err() != nil {
		t.Errorf("after Unregister: closed=%v Err=%v, want closed and nil", closed, s.Err())
	}
}

func TestClose(t *testing.T) {
	b := New(nil)
	subs := make([]*Subscriber, 3)
	for i := range subs {
		subs[i] = NewSubscriber(4)
		b.Register(subs[i])
	}
	b.Submit([]byte("last words"))
	b.Close()
	b.Close()
	for i, s := range subs {
		frames, closed := drain(s)
		if len(frames) != 1 || !closed || s.Err() != ErrClosed {
			t.Errorf("subscriber %d: frames=%q closed=%v err=%v; want the queued frame, closed, ErrClosed", i, frames, closed, s.Err())
		}
	}
	if b.Register(NewSubscriber(1)) {
		t.Error("closed broadcaster accepted a subscriber")
	}
	if n := b.Submit([]byte("x")); n != 0 {
		t.Errorf("closed broadcaster delivered to %d", n)
	}
}

// TestChurn has thousands of subscribers join and leave while frames flow. Every
// subscriber that stays registered must see an in-order, gap-free run of frames
// starting where it joined; run it with -race.
func TestChurn(t *testing.T) {
	const (
		readers = 2000
		frames  = 300
	)
	b := New(nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				b.Submit(fmt.Appendf(nil, "%d", i))
			}
		}
	})
	errs := make(chan error, readers)
	var readersWG sync.WaitGroup
	for r := range readers {
		readersWG.Go(func() {
			s := NewSubscriber(16)
			b.Register(s)
			prev := -1
			for n := 0; n < frames%(r+1)+1; n++ {
				f, ok := <-s.Frames()
				if !ok {
					if s.Err() != ErrEvicted {
						errs <- fmt.Errorf("reader %d: queue closed with %v", r, s.Err())
					}
					return
				}
				var i int
				fmt.Sscan(string(f), &i)
				if prev >= 0 && i != prev+1 {
					errs <- fmt.Errorf("reader %d: frame %d after %d", r, i, prev)
					return
				}
				prev = i
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
	br := New(nil)
	subs := make([]*Subscriber, subscribers)
	for i := range subs {
		subs[i] = NewSubscriber(1)
		br.Register(subs[i])
	}
	frame := []byte("id: 1-1\nevent: message\ndata: {}\n\n")
	b.ReportAllocs()
	// Each round includes the readers' receive, as a delivery does.
	for b.Loop() {
		br.Submit(frame)
		for _, s := range subs {
			<-s.queue
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
}

func BenchmarkSubmit(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchmarkSubmit(b, n) })
	}
}
