package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeCounter answers Hit with the next of its answers, and records the
// keys and windows it was asked for.
type fakeCounter struct {
	answers []hit
	keys    []string
	windows []time.Duration
}

type hit struct {
	n    int64
	left time.Duration
	err  error
}

func (f *fakeCounter) Hit(_ context.Context, key string, window time.Duration) (int64, time.Duration, error) {
	f.keys, f.windows = append(f.keys, key), append(f.windows, window)
	a := f.answers[0]
	f.answers = f.answers[1:]
	return a.n, a.left, a.err
}

func TestSharedAllow(t *testing.T) {
	down := errors.New("down")
	for _, tc := range []struct {
		name      string
		answer    hit
		ok        bool
		retry     time.Duration
		wantError bool
	}{
		{"first", hit{1, time.Minute, nil}, true, 0, false},
		{"at the limit", hit{3, 10 * time.Second, nil}, true, 0, false},
		{"over the limit", hit{4, 10 * time.Second, nil}, false, 10 * time.Second, false},
		{"over, window ending", hit{9, 0, nil}, false, time.Millisecond, false},
		{"counter down", hit{0, 0, down}, false, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeCounter{answers: []hit{tc.answer}}
			ok, retry, err := NewShared("posts", 3, time.Minute, c).Allow(context.Background(), "ip:1")
			if ok != tc.ok || retry != tc.retry || (err != nil) != tc.wantError {
				t.Errorf("Allow: %v %v %v, want %v %v error=%v", ok, retry, err, tc.ok, tc.retry, tc.wantError)
			}
			if tc.wantError && !errors.Is(err, down) {
				t.Errorf("error %v does not wrap the counter's", err)
			}
			if c.keys[0] != "posts:3:60000:ip:1" || c.windows[0] != time.Minute {
				t.Errorf("counted %q in a window of %v, want posts:3:60000:ip:1 in 1m", c.keys[0], c.windows[0])
			}
		})
	}
}
