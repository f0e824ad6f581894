package service

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/blocklist"
	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/screen"
)

// screenOf starts a site's screen, which answers each request with judge's
// verdict, and returns a screen of it and the count of its calls.
func screenOf(t *testing.T, judge func(screen.Request) string) (*screen.Screen, *atomic.Int32) {
	t.Helper()
	calls := new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req screen.Request
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, judge(req))
	}))
	t.Cleanup(srv.Close)
	secret, err := hooks.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	client := hooks.NewClient()
	t.Cleanup(client.Close)
	return screen.New(client, screen.Config{Endpoint: hooks.Endpoint{URL: srv.URL, Secret: secret, Timeout: time.Second}}), calls
}

// moderated judges as a moderation service might: it refuses spam,
// masks "darn", and allows the rest.
func moderated(r screen.Request) string {
	switch {
	case strings.Contains(r.Message, "spam"):
		return `{"action":"refuse","reason":"no spam, please"}`
	case strings.Contains(r.Message, "darn"):
		return `{"action":"replace","message":` + strings.ReplaceAll(`"`+r.Message+`"`, "darn", "d**n") + `}`
	}
	return `{"action":"allow"}`
}

func TestScreenAllowsRefusesAndReplacesPosts(t *testing.T) {
	sc, _ := screenOf(t, moderated)
	s := newService(t, Config{Screen: sc})
	ctx := context.Background()
	if p, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "hello"}); err != nil || p.Message.Message != "hello" {
		t.Errorf("an allowed post: %+v, %v", p.Message, err)
	}
	_, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "buy spam"})
	if kind, reason := refusalOf(t, err); kind != Forbidden || reason != "screen_refused" || err.Error() != "no spam, please" {
		t.Errorf("a refused post: %v %q %q; want Forbidden with the screen's reason", kind, reason, err)
	}
	if p, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "darn it"}); err != nil || p.Message.Message != "d**n it" {
		t.Errorf("a replaced post: %+v, %v; want the screen's text stored", p.Message, err)
	}
	rep, _ := s.History("lobby", "", "", 10)
	if got := texts(rep.Messages); got != "hello|d**n it" {
		t.Errorf("the room holds %q, want the allowed post and the replaced one", got)
	}
}

// texts are the messages' texts, joined by |.
func texts(msgs []rooms.Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(m.Message)
	}
	return b.String()
}

func TestAReplacementPassesThePostChecks(t *testing.T) {
	sc, _ := screenOf(t, func(r screen.Request) string {
		if r.Message == "long" {
			return `{"action":"replace","message":"` + strings.Repeat("x", 100) + `"}`
		}
		return `{"action":"replace","message":"buy now"}`
	})
	words, err := blocklist.New([]string{"buy now"})
	if err != nil {
		t.Fatal(err)
	}
	s := newService(t, Config{Screen: sc, BlockWords: words, MaxMessageSize: 64})
	ctx := context.Background()
	if _, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "hello"}); kindOf(t, err) != Forbidden {
		t.Errorf("a replacement with a blocked word: %v, want refused", err)
	}
	if _, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "long"}); kindOf(t, err) != TooLarge {
		t.Errorf("a replacement over the size: %v, want refused as too large", err)
	}
	if rep, _ := s.History("lobby", "", "", 10); len(rep.Messages) != 0 {
		t.Errorf("stored %q, want nothing", texts(rep.Messages))
	}
}

func TestARetryIsNotScreenedAgain(t *testing.T) {
	sc, calls := screenOf(t, moderated)
	s := newService(t, Config{Screen: sc, RatePosts: 100, RateWindow: time.Minute})
	ctx := context.Background()
	first, err := s.Submit(ctx, stranger, Post{Room: "lobby", User: "sam", Message: "hello", Key: "k1", KeyGiven: true})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Submit(ctx, stranger, Post{Room: "lobby", User: "sam", Message: "hello", Key: "k1", KeyGiven: true})
	if err != nil || !again.Repeat || again.Message.ID != first.Message.ID {
		t.Fatalf("a retry: %+v, %v; want the first message, repeated", again, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the screen was called %d times for a post and its retry, want once", n)
	}
}

// TestARetryOfAReplacedPostIsAnsweredAsARepeat: the stored text is the
// screen's, so the retry's own text does not find it; the screen is asked
// again, gives the same replacement, and the retry is answered with the
// message stored the first time.
func TestARetryOfAReplacedPostIsAnsweredAsARepeat(t *testing.T) {
	sc, _ := screenOf(t, moderated)
	s := newService(t, Config{Screen: sc})
	ctx := context.Background()
	first, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "darn", Key: "k1", KeyGiven: true})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "darn", Key: "k1", KeyGiven: true})
	if err != nil || !again.Repeat || again.Message.ID != first.Message.ID {
		t.Fatalf("a retry of a replaced post: %+v, %v; want the first message, repeated", again, err)
	}
	if _, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "other", Key: "k1", KeyGiven: true}); kindOf(t, err) != Conflict {
		t.Errorf("the key reused for another text: %v, want a conflict", err)
	}
}

func TestAClientPastItsLimitCostsTheScreenNothing(t *testing.T) {
	sc, calls := screenOf(t, moderated)
	s := newService(t, Config{Screen: sc, RatePosts: 2, RateWindow: time.Minute})
	for range 5 {
		s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hello"})
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the screen was called %d times for 5 posts under a limit of 2, want 2", n)
	}
}

func TestScreenJudgesEdits(t *testing.T) {
	var mu sync.Mutex
	var kinds []string
	sc, _ := screenOf(t, func(r screen.Request) string {
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, r.Kind+" "+r.Target)
		return moderated(r)
	})
	s := newService(t, Config{Screen: sc, EditWindow: time.Minute})
	ctx := context.Background()
	p, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.EditMessage(ctx, alice, "lobby", p.Message.ID, "spam spam", ""); kindOf(t, err) != Forbidden {
		t.Errorf("an edit the screen refuses: %v, want refused", err)
	}
	ed, err := s.EditMessage(ctx, alice, "lobby", p.Message.ID, "darn", "")
	if err != nil || ed.Message != "d**n" {
		t.Errorf("an edit the screen replaces: %+v, %v; want the screen's text", ed, err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "post |edit " + p.Message.ID + "|edit " + p.Message.ID
	if got := strings.Join(kinds, "|"); got != want {
		t.Errorf("the screen was asked about %q, want %q", got, want)
	}
}

// TestScreenCallsRunConcurrently: while the screen thinks over one post, a
// later post to the same room passes its screen and is stored; the room's
// order is the order in which posts came through.
func TestScreenCallsRunConcurrently(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	sc, _ := screenOf(t, func(r screen.Request) string {
		if r.Message == "slow" {
			close(arrived)
			<-release
		}
		return `{"action":"allow"}`
	})
	s := newService(t, Config{Screen: sc})
	ctx := context.Background()
	slow := make(chan error, 1)
	go func() {
		_, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "slow"})
		slow <- err
	}()
	<-arrived
	if _, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "fast"}); err != nil {
		t.Fatalf("a post while another is screened: %v", err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if rep, _ := s.History("lobby", "", "", 10); texts(rep.Messages) != "fast|slow" {
		t.Errorf("the room holds %q, want the posts in the order they passed the screen", texts(rep.Messages))
	}
}
