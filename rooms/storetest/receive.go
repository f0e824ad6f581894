package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Receive returns the messages of sub's replay and those that follow it, until
// there are n, waiting for them up to 5 s; err says why it stopped short.
// It may be called from any goroutine.
func Receive(sub *rooms.Subscription, n int) ([]rooms.Message, error) {
	var got []rooms.Message
	for _, m := range sub.Messages {
		if !m.IsAction() {
			got = append(got, m)
		}
	}
	deadline := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case <-sub.Ready():
		case <-deadline:
			return got, fmt.Errorf("got %d messages %v, want %d", len(got), idsOf(got), n)
		}
		events, err := sub.Take(nil)
		for _, e := range events {
			if e.Kind == rooms.EventMessage {
				got = append(got, e.Message)
			}
		}
		if err != nil {
			return got, fmt.Errorf("subscription ended after %v: %w", idsOf(got), err)
		}
	}
	return got, nil
}

// IDs returns the ids of sub's replay and of the messages that follow it,
// until there are n, failing t when they do not come within 5 s.
func IDs(t testing.TB, sub *rooms.Subscription, n int) []string {
	t.Helper()
	got, err := TryIDs(sub, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TryIDs is IDs for goroutines other than the test's.
func TryIDs(sub *rooms.Subscription, n int) ([]string, error) {
	got, err := Receive(sub, n)
	return idsOf(got), err
}

func idsOf(msgs []rooms.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}
