package ratelimit

import (
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := New(2, time.Second)
	steps := []struct {
		key       string
		at        time.Duration
		ok        bool
		wantRetry time.Duration
	}{
		{"alice", 0, true, 0},
		{"alice", 100 * time.Millisecond, true, 0},
		{"alice", 400 * time.Millisecond, false, 600 * time.Millisecond},
		{"bob", 400 * time.Millisecond, true, 0},
		{"alice", 999 * time.Millisecond, false, time.Millisecond},
		{"alice", time.Second, true, 0},
		{"alice", 1500 * time.Millisecond, true, 0},
		{"alice", 1600 * time.Millisecond, false, 400 * time.Millisecond},
	}
	for i, s := range steps {
		ok, retry := l.Allow(s.key, t0.Add(s.at))
		if ok != s.ok || retry != s.wantRetry {
			t.Errorf("step %d (%s at %v): ok=%v retry=%v, want %v %v", i, s.key, s.at, ok, retry, s.ok, s.wantRetry)
		}
	}
}

func TestSweepForgetsOldKeys(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := New(1, time.Second)
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k, t0)
	}
	l.Allow("d", t0.Add(3*time.Second))
	if n := l.Len(); n != 1 {
		t.Errorf("%d keys tracked after their windows ended, want 1", n)
	}
}
