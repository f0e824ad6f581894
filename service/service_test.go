package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// TestMain fails the package if any test leaves a goroutine behind: a
// stream or a room that outlives its caller.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newService returns a service of cfg, with defaults for what it leaves
// out, over a manager of its own.
func newService(t *testing.T, cfg Config) *Service {
	t.Helper()
	m := rooms.New(rooms.Config{History: 100, Buffer: 16})
	t.Cleanup(func() { _ = m.Close() })
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = 4 << 10
	}
	if cfg.MaxStreamsPerClient == 0 {
		cfg.MaxStreamsPerClient = 4
	}
	if cfg.MaxNewRoomsPerClient == 0 {
		cfg.MaxNewRoomsPerClient = 100
		cfg.NewRoomsWindow = time.Hour
	}
	return New(m, cfg)
}

// kindOf is the kind of a refusal, 0 for no error, and fails t for an
// error that is no refusal.
func kindOf(t *testing.T, err error) Kind {
	t.Helper()
	if err == nil {
		return 0
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not a refusal", err)
	}
	return e.Kind
}

var (
	alice    = Caller{User: "alice", Addr: "192.0.2.1"}
	stranger = Caller{Addr: "192.0.2.2"}
)

// TestSubmitRefusals: each rule of a post refuses with its kind and stores
// nothing.
func TestSubmitRefusals(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{MaxMessageSize: 8, Rooms: []string{"lobby"}, ReserveNames: true})
	if _, err := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		caller Caller
		post   Post
		want   Kind
	}{
		{"cross-site", Caller{Addr: "192.0.2.3", CrossSite: true}, Post{Room: "lobby", Message: "hi"}, Forbidden},
		{"bad room name", stranger, Post{Room: "../x", Message: "hi"}, Invalid},
		{"room not allowed", stranger, Post{Room: "other", Message: "hi"}, Forbidden},
		{"empty message", stranger, Post{Room: "lobby"}, Invalid},
		{"message too large", stranger, Post{Room: "lobby", Message: "123456789"}, TooLarge},
		{"control characters", stranger, Post{Room: "lobby", Message: "a\x1bb"}, Invalid},
		{"blank user", stranger, Post{Room: "lobby", User: "\u3164", Message: "hi"}, Invalid},
		{"empty key", stranger, Post{Room: "lobby", Message: "hi", KeyGiven: true}, Invalid},
		{"reserved name", stranger, Post{Room: "lobby", User: "alice", Message: "hi"}, Forbidden},
		{"reserved name, invisibly", stranger, Post{Room: "lobby", User: "alice\ufe0f", Message: "hi"}, Forbidden},
	}
	for _, tt := range tests {
		if _, err := s.Submit(context.Background(), tt.caller, tt.post); kindOf(t, err) != tt.want {
			t.Errorf("%s: %v, want a refusal of kind %d", tt.name, err, tt.want)
		}
	}
	if rep, _ := s.History(Caller{}, "lobby", "", "", 10); len(rep.Messages) != 1 {
		t.Errorf("%d messages stored, want alice's alone", len(rep.Messages))
	}
}

// TestSubmitAuthor: the caller's identity is the author, whatever the post
// names; without one the post names its author, "anonymous" by default;
// where sign-in is required, a caller without identity is refused before
// anything is read.
func TestSubmitAuthor(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{})
	for _, tt := range []struct {
		caller   Caller
		user     string
		want     string
		verified bool
	}{
		{alice, "mallory", "alice", true},
		{stranger, "bob", "bob", false},
		{stranger, "", DefaultUser, false},
	} {
		posted, err := s.Submit(context.Background(), tt.caller, Post{Room: "lobby", User: tt.user, Message: "hi"})
		msg := posted.Message
		if err != nil || msg.User != tt.want || msg.Verified != tt.verified {
			t.Errorf("posted as %q by %+v: %+v, %v; want %q, verified %v", tt.user, tt.caller, msg, err, tt.want, tt.verified)
		}
	}
	required := newService(t, Config{IdentityRequired: true})
	if err := required.MayPost(stranger); kindOf(t, err) != Unauthenticated {
		t.Errorf("MayPost without identity: %v, want Unauthenticated", err)
	}
	if err := required.MayPost(alice); err != nil {
		t.Errorf("MayPost with identity: %v", err)
	}
}

// TestSubmitRetry: a post repeated under its idempotency key is answered
// with the message stored the first time, and not counted against the rate
// limit; a new post past the limit is refused with when to retry.
func TestSubmitRetry(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{RatePosts: 1, RateWindow: time.Minute})
	post := Post{Room: "lobby", Message: "hi", Key: "k1", KeyGiven: true}
	first, err := s.Submit(context.Background(), stranger, post)
	if err != nil || first.Repeat {
		t.Fatalf("first post: %v, repeat %v", err, first.Repeat)
	}
	again, err := s.Submit(context.Background(), stranger, post)
	if err != nil || !again.Repeat || again.Message.ID != first.Message.ID {
		t.Errorf("retry: %+v, %v; want %s again", again, err, first.Message.ID)
	}
	_, err = s.Submit(context.Background(), stranger, Post{Room: "lobby", Message: "more"})
	var e *Error
	if !errors.As(err, &e) || e.Kind != RateLimited || e.RetryAfter <= 0 || e.RetryAfter > time.Minute {
		t.Errorf("a second post within the window: %v, want RateLimited with a wait", err)
	}
}

// TestOpenStreamSlots: a client holds at most its share of streams, each
// given back when it closes, and a stream in presence is the caller's
// identity, else the user it names.
func TestOpenStreamSlots(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{MaxStreamsPerClient: 2, ReserveNames: true})
	open := func(c Caller, user string) (*Stream, error) {
		return s.OpenStream(c, StreamRequest{Room: "lobby", User: user}, func() {})
	}
	a, err := open(alice, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	b, err := open(alice, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(alice, ""); kindOf(t, err) != RateLimited {
		t.Errorf("a third stream: %v, want RateLimited", err)
	}
	other, err := open(stranger, "bob")
	if err != nil {
		t.Fatalf("another client's stream: %v", err)
	}
	p, _ := s.Presence(Caller{}, "lobby")
	var users []string
	for _, u := range p.Users {
		users = append(users, u.User)
	}
	if strings.Join(users, ",") != "alice,bob" || p.Users[0].Streams != 2 {
		t.Errorf("presence %+v, want alice with 2 streams and bob", p)
	}
	a.Close()
	a.Close() // twice gives back one slot
	if c, err := open(alice, ""); err != nil {
		t.Errorf("a stream after one closed: %v", err)
	} else {
		c.Close()
	}
	b.Close()
	other.Close()
	if _, err := s.OpenStream(stranger, StreamRequest{Room: "lobby", User: "a\x00"}, func() {}); kindOf(t, err) != Invalid {
		t.Errorf("a stream naming a bad user: %v, want Invalid", err)
	}
}

// TestDelete: rooms are deleted only where the handler allows it, never
// from another site, and an unknown room is not found.
func TestDelete(t *testing.T) {
	t.Parallel()
	closed := newService(t, Config{})
	if err := closed.Delete(alice, "lobby"); kindOf(t, err) != Forbidden {
		t.Errorf("delete where not allowed: %v, want Forbidden", err)
	}
	s := newService(t, Config{AllowDelete: true})
	if _, err := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(Caller{User: "alice", CrossSite: true}, "lobby"); kindOf(t, err) != Forbidden {
		t.Errorf("delete from another site: %v, want Forbidden", err)
	}
	if err := s.Delete(alice, "lobby"); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := s.Delete(alice, "lobby"); kindOf(t, err) != NotFound {
		t.Errorf("delete again: %v, want NotFound", err)
	}
}

// TestHistoryLimit: a limit is a whole number from 1 to MaxHistoryLimit.
func TestHistoryLimit(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{})
	for _, text := range []string{"0", "1001", "-1", "ten", "1.5", ""} {
		n, err := HistoryLimit(text)
		if err == nil {
			_, err = s.History(Caller{}, "lobby", "", "", n)
		}
		if kindOf(t, err) != Invalid {
			t.Errorf("limit %q: %v, want Invalid", text, err)
		}
	}
}

func TestCheckMessage(t *testing.T) {
	t.Parallel()
	s := &Service{cfg: Config{MaxMessageSize: 20}}
	for text, want := range map[string]Kind{
		"hi":                    0,
		"two\nlines\r\n\tend":   0,
		"":                      Invalid,
		"a\x00b":                Invalid,
		"\x1b[31mred":           Invalid,
		"a\u0085b":              Invalid,
		strings.Repeat("x", 21): TooLarge,
		"ééééé":                 0,
	} {
		if got := kindOf(t, s.checkMessage(text)); got != want {
			t.Errorf("checkMessage(%q): kind %d, want %d", text, got, want)
		}
	}
}

func TestValidUserAndKey(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"alice": true, "Zoë Ω": true, "<script>": true, strings.Repeat("é", 64): true,
		"": false, "a\r\nb": false, "a\x00": false, "\u200b": false, strings.Repeat("u", 65): false,
	} {
		if got := ValidUser(name); got != want {
			t.Errorf("ValidUser(%q) = %v, want %v", name, got, want)
		}
	}
	for key, want := range map[string]bool{
		"a": true, "retry-1": true, strings.Repeat("k", 64): true,
		"": false, "a b": false, "é": false, strings.Repeat("k", 65): false, "a\tb": false,
	} {
		if got := validIdempotencyKey(key); got != want {
			t.Errorf("validIdempotencyKey(%q) = %v, want %v", key, got, want)
		}
	}
}
