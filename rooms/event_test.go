package rooms

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Two codecs of the tests, made once per program as codecs are, and how
// many times each encoded.
var (
	upper, lower atomic.Int32
	upperCodec   = NewCodec(func(e *Event) string { upper.Add(1); return "U:" + e.Message.Message })
	lowerCodec   = NewCodec(func(e *Event) []byte { lower.Add(1); return []byte("l:" + e.Message.Message) })
)

// TestEventEncodedOncePerCodec: however many streams write an event at
// once, each codec encodes it once, and every stream gets that encoding;
// the codecs keep their own.
func TestEventEncodedOncePerCodec(t *testing.T) {
	upper.Store(0)
	lower.Store(0)
	ev := MessageEvent(Message{ID: "e-1", Message: "hi", Time: time.Now()})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if got := upperCodec.Encode(ev); got != "U:hi" {
				t.Errorf("upper: %q", got)
			}
			if got := lowerCodec.Encode(ev); string(got) != "l:hi" {
				t.Errorf("lower: %q", got)
			}
		})
	}
	wg.Wait()
	if upper.Load() != 1 || lower.Load() != 1 {
		t.Errorf("encoded %d and %d times by 32 streams, want once per codec", upper.Load(), lower.Load())
	}
}

// TestEventJSON: each kind's data is what its readers are told, one line
// of JSON.
func TestEventJSON(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	tests := []struct {
		event *Event
		want  string
	}{
		{MessageEvent(Message{ID: "e-1", Room: "r", User: "u", Message: "two\nlines", Time: when}),
			`{"id":"e-1","room":"r","user":"u","message":"two\nlines","time":"2026-01-02T03:04:05.006Z","verified":false}`},
		{&Event{Kind: EventPresence, Presence: PresenceChange{Joined: []string{"a"}, Left: []string{}}}, `{"joined":["a"],"left":[]}`},
		{&Event{Kind: EventReset, Oldest: "e-3"}, `{"oldest":"e-3"}`},
		{&Event{Kind: EventReset}, `{"oldest":""}`},
		{CloseEvent, `{}`},
	}
	for _, tc := range tests {
		if got := string(tc.event.JSON()); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.event.Kind, got, tc.want)
		}
	}
}
