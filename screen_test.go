package chat

// The screen with a real Caddy: each verdict over HTTP and gRPC, on_error
// both ways, retries, and a stop or reload while a call hangs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/goleak"

	"github.com/caddy-chat/caddy-chat/hooks"
	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/screen"
)

// screenSecret signs the calls to the tests' screens.
const screenSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// siteScreen is a site's screen, as a site owner would write one: it
// verifies each call's signature, then refuses spam, masks "darn", answers
// 500 to "fail", hangs on "hang" until the call ends, and allows the rest.
type siteScreen struct {
	*httptest.Server
	calls   atomic.Int32
	hanging chan struct{} // receives when a call starts hanging
	last    atomic.Pointer[[]byte]
}

func startSiteScreen(t *testing.T) *siteScreen {
	t.Helper()
	secret, err := hooks.ParseSecret(screenSecret)
	if err != nil {
		t.Fatal(err)
	}
	s := &siteScreen{hanging: make(chan struct{}, 16)}
	var bad atomic.Pointer[string]
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		s.last.Store(&body)
		if err := secret.Verify(r.Header, body, time.Now()); err != nil {
			msg := err.Error()
			bad.Store(&msg)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var req screen.Request
		json.Unmarshal(body, &req)
		switch {
		case strings.Contains(req.Message, "spam"):
			io.WriteString(w, `{"action":"refuse","reason":"no spam, please"}`)
		case strings.Contains(req.Message, "darn"):
			masked, _ := json.Marshal(strings.ReplaceAll(req.Message, "darn", "d**n"))
			fmt.Fprintf(w, `{"action":"replace","message":%s}`, masked)
		case req.Message == "fail":
			http.Error(w, "oops", http.StatusInternalServerError)
		case req.Message == "hang":
			s.hanging <- struct{}{}
			<-r.Context().Done()
		default:
			io.WriteString(w, `{"action":"allow"}`)
		}
	}))
	t.Cleanup(func() {
		s.Close()
		if msg := bad.Load(); msg != nil {
			t.Errorf("a call to the screen failed verification: %s", *msg)
		}
	})
	return s
}

// config is a site with the chat handler screened by s.
func (s *siteScreen) config(options string) config {
	return config{
		site:    "encode gzip\n\tlog\n\theader X-Content-Type-Options nosniff",
		handler: fmt.Sprintf("grpc on\n\t\tscreen %s {\n\t\t\tsecret %s\n\t\t\t%s\n\t\t}", s.URL, screenSecret, options),
		options: "servers {\n protocols h1 h2 h2c\n }",
	}
}

// submit posts text to room over HTTP, with an idempotency key when key is
// not "".
func submit(t *testing.T, room, text, key string) response {
	t.Helper()
	headers := []string{"Content-Type", ctJSON}
	if key != "" {
		headers = append(headers, "Idempotency-Key", key)
	}
	body, _ := json.Marshal(map[string]string{"room": room, "user": "sam", "message": text})
	return do(t, "POST", rootSite+"/submit", string(body), headers...)
}

func TestScreenOverHTTPAndGRPC(t *testing.T) {
	s := startSiteScreen(t)
	startCaddy(t, s.config("timeout 2s"))
	room := roomFor(t, "screened")

	if r := submit(t, room, "hello", ""); r.status != http.StatusCreated || r.json["message"] != "hello" {
		t.Errorf("an allowed post: %d %s", r.status, r.body)
	}
	var sent map[string]any
	json.Unmarshal(*s.last.Load(), &sent)
	if sent["kind"] != "post" || sent["room"] != room || sent["user"] != "sam" || sent["verified"] != false || sent["message"] != "hello" || len(fmt.Sprint(sent["client"])) < 16 {
		t.Errorf("the screen received %v", sent)
	}
	if body := string(*s.last.Load()); strings.Contains(body, "127.0.0.1") {
		t.Errorf("the screen learned the poster's address: %s", body)
	}
	r := submit(t, room, "buy spam", "")
	if r.status != http.StatusForbidden || r.json["error"] != "no spam, please" || r.json["reason"] != "screen_refused" {
		t.Errorf("a refused post: %d %s; want 403 with the screen's reason", r.status, r.body)
	}
	if r := submit(t, room, "darn it", ""); r.status != http.StatusCreated || r.json["message"] != "d**n it" {
		t.Errorf("a replaced post: %d %s; want the screen's text stored", r.status, r.body)
	}

	c := grpcClient(rootSite)
	_, err := c.Submit(callCtx(t), connect.NewRequest(&chatv1.SubmitRequest{Room: room, User: "sam", Message: "spam again"}))
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodePermissionDenied || cerr.Message() != "no spam, please" {
		t.Errorf("a post refused over gRPC: %v; want PermissionDenied with the screen's reason", err)
	}
	if m := submitRPC(t, c, room, "sam", "darn gRPC", ""); m.Message != "d**n gRPC" {
		t.Errorf("a post replaced over gRPC: %q", m.Message)
	}

	h := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "")
	var got []string
	for _, m := range h.json["messages"].([]any) {
		got = append(got, m.(map[string]any)["message"].(string))
	}
	if strings.Join(got, "|") != "hello|d**n it|d**n gRPC" {
		t.Errorf("the room holds %q, want only what the screen let through, as it let it", got)
	}
	if n := metric(t, fmt.Sprintf(`caddy_chat_hook_calls_total{hook="screen",url=%q}`, s.URL)); n != 5 {
		t.Errorf("caddy_chat_hook_calls_total = %v, want 5", n)
	}
}

func TestScreenFailureFollowsOnError(t *testing.T) {
	s := startSiteScreen(t)
	failures := fmt.Sprintf(`caddy_chat_hook_failures_total{hook="screen",url=%q}`, s.URL)
	room := roomFor(t, "failing")

	startCaddy(t, s.config("timeout 300ms")) // on_error refuse, the default
	for _, text := range []string{"hang", "fail"} {
		start := time.Now()
		r := submit(t, room, text, "")
		if r.status != http.StatusServiceUnavailable || r.json["reason"] != "screen_unavailable" || r.header.Get("Retry-After") == "" {
			t.Errorf("a screen that answers %q, on_error refuse: %d %s; want 503 screen_unavailable with Retry-After", text, r.status, r.body)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("a screen that answers %q held the post %v with a 300ms timeout", text, took)
		}
	}
	if n := metric(t, failures); n != 2 {
		t.Errorf("%s = %v, want 2", failures, n)
	}

	startCaddy(t, s.config("timeout 300ms\n\t\t\ton_error allow"))
	for _, text := range []string{"hang", "fail"} {
		if r := submit(t, room, text, ""); r.status != http.StatusCreated || r.json["message"] != text {
			t.Errorf("a screen that answers %q, on_error allow: %d %s; want it stored", text, r.status, r.body)
		}
	}
	if n := metric(t, failures); n != 4 {
		t.Errorf("%s = %v, want 4", failures, n)
	}
}

// TestAPosterWhoHangsUpDoesNotPassTheScreen: with on_error allow, a poster
// who hangs up while the screen decides has nothing stored, and the screen
// is not counted as failing.
func TestAPosterWhoHangsUpDoesNotPassTheScreen(t *testing.T) {
	s := startSiteScreen(t)
	failures := fmt.Sprintf(`caddy_chat_hook_failures_total{hook="screen",url=%q}`, s.URL)
	startCaddy(t, s.config("timeout 10s\n\t\t\ton_error allow"))
	room := roomFor(t, "hangup")
	before := metric(t, failures)
	ctx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	go func() {
		<-s.hanging
		hangUp()
	}()
	req, err := http.NewRequestWithContext(ctx, "POST", rootSite+"/submit", strings.NewReader(fmt.Sprintf(`{"room":%q,"message":"hang"}`, room)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctJSON)
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the post was answered %s though its poster hung up", resp.Status)
	}
	time.Sleep(500 * time.Millisecond) // the handler's way back from the screen
	if h := do(t, "GET", rootSite+"/rooms/"+room+"/messages", ""); strings.Contains(h.body, `"hang"`) {
		t.Errorf("a post the screen never allowed was stored as its poster hung up: %s", h.body)
	}
	if n := metric(t, failures); n != before {
		t.Errorf("%s went from %v to %v on a poster hanging up, want no failure counted", failures, before, n)
	}
}

func TestScreenIsNotCalledForARetry(t *testing.T) {
	s := startSiteScreen(t)
	startCaddy(t, s.config(""))
	room := roomFor(t, "retry")
	first := submit(t, room, "hello", "retry-1")
	again := submit(t, room, "hello", "retry-1")
	if first.status != http.StatusCreated || again.status != http.StatusOK || again.json["id"] != first.json["id"] {
		t.Fatalf("a post and its retry: %d %s, then %d %s", first.status, first.body, again.status, again.body)
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("the screen was called %d times for a post and its retry, want once", n)
	}
}

// TestAHangingScreenDoesNotHoldUpAReloadOrAStop: a reload, and then a stop,
// while a post waits on a screen that never answers, each take about a
// second at most; the post is refused as the server stopping (retried, it
// is screened by the next config), never let through, and nothing is left
// running.
func TestAHangingScreenDoesNotHoldUpAReloadOrAStop(t *testing.T) {
	s := startSiteScreen(t)
	cfg := s.config("timeout 1m\n\t\t\ton_error allow")
	startCaddy(t, cfg)
	room := roomFor(t, "hanging")
	submit(t, room, "warm up", "")
	client.CloseIdleConnections()
	baseline := goleak.IgnoreCurrent()

	for _, end := range []struct {
		name string
		do   func() error
	}{
		// Another timeout: Caddy skips a reload of the config it runs.
		{"reload", func() error { return loadCaddyfile(s.config("timeout 59s\n\t\t\ton_error allow").String()) }},
		{"stop", caddy.Stop},
	} {
		answered := make(chan response, 1)
		go func() {
			r, err := tryDo("POST", rootSite+"/submit", fmt.Sprintf(`{"room":%q,"message":"hang"}`, room), "Content-Type", ctJSON)
			if err != nil {
				r.body = err.Error()
			}
			answered <- r
		}()
		select {
		case <-s.hanging:
		case <-time.After(wait):
			t.Fatal("the post never reached the screen")
		}
		start := time.Now()
		if err := end.do(); err != nil {
			t.Fatalf("%s: %v", end.name, err)
		}
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("a %s took %v while a screen call hung", end.name, took)
		}
		select {
		case r := <-answered:
			if r.status != http.StatusServiceUnavailable || r.json["reason"] != "stopping" {
				t.Errorf("the post whose screen hung through a %s: %d %s; want 503 stopping", end.name, r.status, r.body)
			}
		case <-time.After(time.Second):
			t.Errorf("the post whose screen hung was not answered within 1s of the %s", end.name)
		}
	}
	client.CloseIdleConnections()
	goleak.VerifyNone(t, baseline)
	startCaddy(t, config{})
	if h := do(t, "GET", rootSite+"/rooms/"+room+"/messages", ""); strings.Contains(h.body, `"hang"`) {
		t.Errorf("a post whose screen never answered was stored: %s", h.body)
	}
}
