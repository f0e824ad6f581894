package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/sse"
)

// The in-process Caddy of these tests. Its admin port is its own, so that the
// tests never talk to another Caddy on the machine (caddytest's default, 2999,
// is shared by every project using caddytest).
const (
	adminPort = 2399
	rootSite  = "http://localhost:9080" // chat mounted at the site root
	chatSite  = "http://localhost:9081" // chat under handle_path /chat/*
	chatBase  = chatSite + "/chat"
	wait      = 5 * time.Second // for anything that should happen at once
)

// config is a Caddyfile for the in-process Caddy: the chat app with the given
// global options, and the chat handler with the given subdirectives both at a
// site root and under /chat/ on another site.
type config struct {
	global  string // chat global options
	handler string
	site    string // more directives for the root site
	options string // more global options
}

func (c config) String() string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port 9080
	https_port 9443
	auto_https off
	%s
	chat {
		%s
	}
}
%s {
	%s
	handle /metrics {
		metrics
	}
	chat {
		%s
	}
	respond "not chat" 404
}
%s {
	handle_path /chat/* {
		chat {
			%s
		}
		respond "not chat, under /chat" 404
	}
	respond "outside chat" 404
}
`, adminPort, c.options, c.global, rootSite, c.site, c.handler, chatSite, c.handler)
}

// startCaddy loads cfg into the in-process Caddy, starting it if needed.
func startCaddy(t *testing.T, cfg config) {
	t.Helper()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	tester.InitServer(cfg.String(), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	// A kept-alive connection may still reach the previous config's server
	// for a moment; start this config's requests on new connections.
	client.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// reload loads cfg through the admin API, as `caddy reload` does, and
// returns how long the load took.
func reload(t *testing.T, cfg config) time.Duration {
	t.Helper()
	start := time.Now()
	startCaddy(t, cfg)
	return time.Since(start)
}

// client is for requests that end; streams use their own.
var client = &http.Client{Timeout: wait}

type response struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

func do(t *testing.T, method, url string, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.json); err != nil {
			t.Fatalf("%s %s: response is not JSON: %q", method, url, b)
		}
	}
	return r
}

// postJSON submits a message through POST /submit and returns it.
func postJSON(t *testing.T, base, room, user, message string) rooms.Message {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"room": room, "user": user, "message": message})
	resp := do(t, "POST", base+"/submit", string(body), "Content-Type", "application/json")
	if resp.status != http.StatusCreated {
		t.Fatalf("submit to %s: %d %s", room, resp.status, resp.body)
	}
	var m rooms.Message
	if err := json.Unmarshal([]byte(resp.body), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// stream is an open SSE stream, read by the WHATWG rules.
type stream struct {
	resp   *http.Response
	events <-chan sse.Received
	cancel context.CancelFunc
}

func openStream(t *testing.T, url string, headers ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	s := &stream{resp: resp, events: readEvents(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s
}

// readEvents parses body into events until it ends; then it closes the
// channel.
func readEvents(body io.Reader) <-chan sse.Received {
	events := make(chan sse.Received, 10000)
	go func() {
		defer close(events)
		r := sse.NewReader(body)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	return events
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, failing the test if none comes in time.
func (s *stream) next(t *testing.T) sse.Received {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended while an event was expected")
		}
		return ev
	case <-time.After(wait):
		t.Fatal("no event within", wait)
	}
	return sse.Received{}
}

// messages reads n message events and decodes them.
func (s *stream) messages(t *testing.T, n int) []rooms.Message {
	t.Helper()
	out := make([]rooms.Message, 0, n)
	for len(out) < n {
		ev := s.next(t)
		if ev.Name != "message" {
			t.Fatalf("event %q (%s) where a message was expected", ev.Name, ev.Data)
		}
		var m rooms.Message
		if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
			t.Fatalf("message data %q: %v", ev.Data, err)
		}
		if m.ID != ev.ID {
			t.Fatalf("event id %q but message id %q", ev.ID, m.ID)
		}
		out = append(out, m)
	}
	return out
}

// eventIDs reads n message events and returns their ids, comma-separated,
// without decoding the data: for streams too heavy to decode.
func (s *stream) eventIDs(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		ev := s.next(t)
		if ev.Name != "message" {
			t.Fatalf("event %q where a message was expected", ev.Name)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ev.ID)
	}
	return b.String()
}

// quiet asserts that no event arrives for a moment.
func (s *stream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if ok {
			t.Fatalf("unexpected event %q: %s", ev.Name, ev.Data)
		}
	case <-time.After(d):
	}
}

// end waits for the server to end the stream and returns the events that
// came before the end.
func (s *stream) end(t *testing.T) []sse.Received {
	t.Helper()
	var evs []sse.Received
	timeout := time.After(wait)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-timeout:
			t.Fatal("the stream did not end within", wait)
		}
	}
}

func ids(msgs []rooms.Message) string {
	var b bytes.Buffer
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.ID)
	}
	return b.String()
}

func texts(msgs []rooms.Message) string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Message)
	}
	return strings.Join(out, ",")
}

// metric scrapes the root site's /metrics and returns the value of the
// series named exactly by series (with its labels, if any), 0 if absent.
func metric(t *testing.T, series string) float64 {
	t.Helper()
	resp := do(t, "GET", rootSite+"/metrics", "")
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.status)
	}
	for _, line := range strings.Split(resp.body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}
