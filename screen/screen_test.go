package screen

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-chat/caddy-chat/hooks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSecret signs the calls of these tests.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver is a site's screen: it verifies each call's signature as a
// receiver should, decodes the request and answers with answer's status and
// body. It counts the calls it took.
type receiver struct {
	*httptest.Server
	calls atomic.Int32
	last  atomic.Pointer[Request]
	bad   atomic.Pointer[string] // what was wrong with a call, if anything
}

func newReceiver(t *testing.T, answer func(Request) (int, string)) *receiver {
	t.Helper()
	secret, err := hooks.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := new(receiver)
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		body, _ := io.ReadAll(req.Body)
		if err := secret.Verify(req.Header, body, time.Now()); err != nil {
			msg := "signature: " + err.Error()
			r.bad.Store(&msg)
		}
		var got Request
		if err := json.Unmarshal(body, &got); err != nil {
			msg := "payload: " + err.Error()
			r.bad.Store(&msg)
		}
		r.last.Store(&got)
		status, text := answer(got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, text)
	}))
	t.Cleanup(func() {
		r.Close()
		if bad := r.bad.Load(); bad != nil {
			t.Errorf("the screen received a bad call: %s", *bad)
		}
	})
	return r
}

// newScreen returns a screen of r with a client of its own.
func newScreen(t *testing.T, r *receiver, timeout time.Duration, allowOnError bool) *Screen {
	t.Helper()
	secret, _ := hooks.ParseSecret(testSecret)
	client := hooks.NewClient()
	t.Cleanup(client.Close)
	return New(client, Config{Endpoint: hooks.Endpoint{URL: r.URL, Secret: secret, Timeout: timeout}, AllowOnError: allowOnError})
}

var post = Request{Kind: KindPost, Room: "lobby", User: "alice", Message: "hello", Client: ClientHash("ip:192.0.2.1")}

func TestJudgeReadsEachVerdict(t *testing.T) {
	for answer, want := range map[string]Verdict{
		`{"action":"allow"}`:                          {Action: Allow},
		`{"action":"refuse","reason":"no spam here"}`: {Action: Refuse, Reason: "no spam here"},
		`{"action":"replace","message":"h***o"}`:      {Action: Replace, Message: "h***o"},
	} {
		r := newReceiver(t, func(Request) (int, string) { return 200, answer })
		got, err := newScreen(t, r, time.Second, false).Judge(context.Background(), post)
		if err != nil || got != want {
			t.Errorf("answered %s: Judge = %+v, %v; want %+v", answer, got, err, want)
		}
		if last := r.last.Load(); last == nil || *last != post {
			t.Errorf("the screen received %+v, want %+v", last, post)
		}
	}
}

func TestAFailingScreenFollowsOnError(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	failures := map[string]func(Request) (int, string){
		"a timeout":  func(Request) (int, string) { <-release; return 200, `{"action":"allow"}` },
		"500":        func(Request) (int, string) { return 500, `{"action":"allow"}` },
		"a redirect": func(Request) (int, string) { return 302, `{"action":"allow"}` },
		"no verdict": func(Request) (int, string) { return 200, `{"action":"maybe"}` },
		"not JSON":   func(Request) (int, string) { return 200, `<html>oops</html>` },
		"a 1 MiB answer": func(Request) (int, string) {
			return 200, `{"action":"allow","pad":"` + strings.Repeat("x", 1<<20) + `"}`
		},
		"an endless reason": func(Request) (int, string) {
			return 200, `{"action":"refuse","reason":"` + strings.Repeat("x", MaxReason+1) + `"}`
		},
	}
	for name, answer := range failures {
		r := newReceiver(t, answer)
		start := time.Now()
		if _, err := newScreen(t, r, 300*time.Millisecond, false).Judge(context.Background(), post); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s, on_error refuse: %v, want ErrUnavailable", name, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s took %v with a 300ms timeout", name, took)
		}
		if v, err := newScreen(t, r, 300*time.Millisecond, true).Judge(context.Background(), post); err != nil || v.Action != Allow {
			t.Errorf("%s, on_error allow: %+v, %v; want allowed", name, v, err)
		}
	}
}

func TestJudgeEndsWhenTheClientCloses(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{})
	r := newReceiver(t, func(Request) (int, string) { close(arrived); <-release; return 200, `{"action":"allow"}` })
	secret, _ := hooks.ParseSecret(testSecret)
	client := hooks.NewClient()
	s := New(client, Config{Endpoint: hooks.Endpoint{URL: r.URL, Secret: secret, Timeout: time.Minute}, AllowOnError: true})
	go func() { <-arrived; client.Close() }()
	start := time.Now()
	// Even on_error allow refuses: a stop lets nothing through unscreened.
	if _, err := s.Judge(context.Background(), post); !errors.Is(err, ErrStopping) {
		t.Errorf("Judge when the client closed: %v, want ErrStopping", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Judge took %v after its client closed", took)
	}
}

// TestJudgeGivesNoVerdictWhenThePosterHangsUp: a poster who hangs up while
// the screen decides gets the context's error, even with on_error allow,
// and the call is no failure of the screen's.
func TestJudgeGivesNoVerdictWhenThePosterHangsUp(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{})
	r := newReceiver(t, func(Request) (int, string) { close(arrived); <-release; return 200, `{"action":"allow"}` })
	secret, _ := hooks.ParseSecret(testSecret)
	client := hooks.NewClient()
	defer client.Close()
	observed := 0
	s := New(client, Config{
		Endpoint:     hooks.Endpoint{URL: r.URL, Secret: secret, Timeout: time.Minute},
		AllowOnError: true,
		Observe:      func(time.Duration, error) { observed++ },
	})
	ctx, hangUp := context.WithCancel(context.Background())
	go func() { <-arrived; hangUp() }()
	v, err := s.Judge(ctx, post)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Judge after the poster hung up: %+v, %v; want context.Canceled, whatever on_error says", v, err)
	}
	if observed != 0 {
		t.Errorf("the hang-up was observed %d times as a call of the screen", observed)
	}
}

func TestObserveSeesEveryCall(t *testing.T) {
	r := newReceiver(t, func(q Request) (int, string) {
		if q.Message == "fail" {
			return 500, ""
		}
		return 200, `{"action":"allow"}`
	})
	secret, _ := hooks.ParseSecret(testSecret)
	client := hooks.NewClient()
	defer client.Close()
	var calls, failures int
	s := New(client, Config{Endpoint: hooks.Endpoint{URL: r.URL, Secret: secret}, Observe: func(took time.Duration, err error) {
		calls++
		if err != nil {
			failures++
			if !strings.Contains(err.Error(), r.URL) || strings.Contains(err.Error(), "MfKQ") {
				t.Errorf("failure %q: want the URL and never the secret", err)
			}
		}
	}})
	s.Judge(context.Background(), post)
	fail := post
	fail.Message = "fail"
	s.Judge(context.Background(), fail)
	if calls != 2 || failures != 1 {
		t.Errorf("observed %d calls and %d failures, want 2 and 1", calls, failures)
	}
}

func TestClientHashHidesTheKey(t *testing.T) {
	a, b := ClientHash("ip:192.0.2.1"), ClientHash("ip:192.0.2.2")
	if a == b || a != ClientHash("ip:192.0.2.1") {
		t.Errorf("hashes %s and %s: want one per client, the same each time", a, b)
	}
	if strings.Contains(a, "192") {
		t.Errorf("hash %s shows the address", a)
	}
}
