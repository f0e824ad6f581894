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
		{MessageEvent(Message{ID: "e-1", Room: "r", User: "u", Message: "new", Time: when, Edited: when.Add(time.Second),
			Author: Authorship{ClientKey: "192.0.2.1", SecretDigest: "digest"}}),
			`{"id":"e-1","room":"r","user":"u","message":"new","time":"2026-01-02T03:04:05.006Z","verified":false,"edited":"2026-01-02T03:04:06.006Z"}`},
		{MessageEvent(Message{ID: "e-2", User: "u", Message: "", Time: when, Action: ActionEdit, Target: "e-1"}),
			`{"id":"e-2","target":"e-1","message":"","time":"2026-01-02T03:04:05.006Z"}`},
		{MessageEvent(Message{ID: "e-3", User: "mod", Time: when, Action: ActionDelete, Target: "e-1", ByModerator: true}),
			`{"id":"e-3","target":"e-1","by":"moderator","time":"2026-01-02T03:04:05.006Z"}`},
		{MessageEvent(Message{ID: "e-4", User: "u", Time: when, Action: ActionDelete, Target: "e-1"}),
			`{"id":"e-4","target":"e-1","by":"author","time":"2026-01-02T03:04:05.006Z"}`},
	}
	for _, tc := range tests {
		if got := string(tc.event.JSON()); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.event.Kind, got, tc.want)
		}
	}
	if EventEdit.String() != "edit" || EventDelete.String() != "delete" {
		t.Errorf("the actions' events are named %q and %q, want edit and delete", EventEdit, EventDelete)
	}
}

// TestEditedMessageJSONRoundTrip: a message's edited time comes back
// from its JSON, and a message never edited has none.
func TestEditedMessageJSONRoundTrip(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	for _, m := range []Message{
		{ID: "e-1", Room: "r", User: "u", Message: "hi", Time: when},
		{ID: "e-1", Room: "r", User: "u", Message: "hi", Time: when, Edited: when.Add(time.Minute)},
	} {
		b, _ := m.MarshalJSON()
		var back Message
		if err := back.UnmarshalJSON(b); err != nil || back != m {
			t.Errorf("%s came back as %+v, %v", b, back, err)
		}
	}
}
