package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/sse"
)

// The in-process Caddy of these tests listens on ports picked free when the
// test binary starts, so that two runs on one machine, or a Caddy already
// running there, never answer each other's requests. Its admin endpoint is
// off: configs are loaded with caddy.Load, as the admin API's /load does.
var (
	rootSite = "http://localhost:" + freePort() // chat mounted at the site root
	chatSite = "http://localhost:" + freePort() // chat under handle_path /chat/*
	chatBase = chatSite + "/chat"
	// Caddy's default ports, for redirects and automatic HTTPS, moved off
	// the well-known ones.
	httpPort, httpsPort = freePort(), freePort()
)

// wait bounds anything that should happen at once.
const wait = 5 * time.Second

// testRun holds what the tests of one run leave on disk: Caddy's storage, built
// binaries, browser profiles. TestMain removes it.
var testRun struct {
	dir    string
	id     string   // unique to this process: room names carry it
	atExit []func() // what to stop before dir is removed
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-chat-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the test directory:", err)
		os.Exit(1)
	}
	testRun.dir = dir
	testRun.id = strconv.FormatInt(time.Now().UnixNano()%(1<<30), 36)
	code := m.Run()
	if caddyStarted {
		_ = caddy.Stop()
	}
	for _, f := range testRun.atExit {
		f()
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "removing the test directory:", err)
	}
	os.Exit(code)
}

// freePort returns a TCP port that is free now on every address, as Caddy
// binds them. It is drawn below Linux's ephemeral range (32768 and up), so
// that the outgoing connections of a load test, here or in another run,
// never take it before Caddy binds it.
func freePort() string {
	for range 1000 {
		port := strconv.Itoa(20000 + rand.IntN(12000))
		if ln, err := net.Listen("tcp", ":"+port); err == nil {
			ln.Close()
			return port
		}
	}
	panic("no free port between 20000 and 32000")
}

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
	%s
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
		%s
	}
	respond "not chat" 404
}
%s {
	handle_path /chat/* {
		chat {
			%s
			%s
		}
		respond "not chat, under /chat" 404
	}
	respond "outside chat" 404
}
`, testGlobals(), c.options, c.global, rootSite, c.site, manyRooms, c.handler, chatSite, manyRooms, c.handler)
}

// testGlobals are the global options every in-process config begins with:
// no admin endpoint, nothing kept or trusted outside the run's directory,
// and Caddy's own ports off the well-known ones.
func testGlobals() string {
	return fmt.Sprintf("admin off\n\tpersist_config off\n\tstorage file_system %s\n\tskip_install_trust\n\thttp_port %s\n\thttps_port %s",
		filepath.Join(testRun.dir, "storage"), httpPort, httpsPort)
}

// manyRooms lifts the limit on rooms one client makes: every test posts
// from the same address, to rooms of its own. A test of the limit sets it
// again in its handler, and the later setting wins.
const manyRooms = "max_new_rooms_per_client 1000000"

// caddyStarted is set once a config has been loaded; TestMain then stops
// Caddy.
var caddyStarted bool

// startCaddy loads the Caddyfile cfg into the in-process Caddy, replacing
// the running config as a reload does. A config that does not load fails
// the test: it never skips.
func startCaddy(t *testing.T, cfg fmt.Stringer) {
	t.Helper()
	if err := loadCaddyfile(cfg.String()); err != nil {
		t.Fatal(err)
	}
	caddyStarted = true
	// A kept-alive connection may still reach the previous config's server
	// for a moment; start this config's requests on new connections.
	client.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// refusesToLoad fails t unless the Caddyfile cfg, described by what, is
// refused with an error that contains want. A config that loads is
// replaced by the plain one first.
func refusesToLoad(t *testing.T, cfg fmt.Stringer, what, want string) {
	t.Helper()
	err := loadCaddyfile(cfg.String())
	if err == nil {
		reload(t, config{})
		t.Fatalf("%s loaded", what)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: error %q does not say %q", what, err, want)
	}
}

// loadCaddyfile adapts a Caddyfile and runs it in this process.
func loadCaddyfile(caddyfile string) error {
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfgJSON, warnings, err := adapter.Adapt([]byte(caddyfile), nil)
	if err != nil {
		return fmt.Errorf("adapting the Caddyfile: %w\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		// The configs are built with fmt, not caddy fmt; any other warning
		// means the config is not what the test meant.
		if !strings.Contains(w.Message, "not formatted") {
			return fmt.Errorf("adapting the Caddyfile: %s\n%s", w, caddyfile)
		}
	}
	if err := caddy.Load(cfgJSON, false); err != nil {
		return fmt.Errorf("loading the config: %w\n%s", err, caddyfile)
	}
	return waitOldListeners()
}

// waitOldListeners waits until the sites' ports have one listening socket
// each. Caddy binds every config's listeners with SO_REUSEPORT and closes
// the old config's just after Load returns; a connection the kernel queued
// on an old socket is reset when it closes. Real clients retry; the tests
// wait instead.
func waitOldListeners() error {
	ports := map[string]bool{}
	for _, site := range []string{rootSite, chatSite} {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(site, "http://"))
		n, _ := strconv.Atoi(port)
		ports[fmt.Sprintf(":%04X ", n)] = true
	}
	deadline := time.Now().Add(wait)
	for {
		counts := map[string]int{}
		for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, err := os.ReadFile(table)
			if err != nil {
				return fmt.Errorf("counting listeners: %w", err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) > 3 && f[3] == "0A" { // LISTEN
					for port := range ports {
						if strings.HasSuffix(f[1]+" ", port) {
							counts[port]++
						}
					}
				}
			}
		}
		settled := true
		for port := range ports {
			settled = settled && counts[port] <= 1
		}
		if settled {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the old config still listens %v after the reload", wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reload loads cfg, as `caddy reload` does, and returns how long the load
// took.
func reload(t *testing.T, cfg config) time.Duration {
	t.Helper()
	start := time.Now()
	startCaddy(t, cfg)
	return time.Since(start)
}

// roomSeq numbers the rooms of a run.
var roomSeq atomic.Int64

// roomFor names a new room for the test. Rooms outlive configs, so the name
// carries the run and a sequence number: tests that share the in-process
// Caddy never share rooms, and neither do two runs of one test (-count=2).
func roomFor(t *testing.T, suffix string) string {
	tail := fmt.Sprintf("-%s-%s%d", suffix, testRun.id, roomSeq.Add(1))
	name := strings.Trim(regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(t.Name(), "-"), "-")
	if max := 64 - len(tail); len(name) > max {
		name = name[len(name)-max:]
		name = strings.TrimLeft(name, "-._")
	}
	return name + tail
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
	r, err := tryDo(method, url, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for goroutines other than the test's, which must not call
// t.Fatal: it returns what went wrong instead.
func tryDo(method, url string, body string, headers ...string) (response, error) {
	return tryDoWith(client, method, url, body, headers...)
}

// doWith is do through c, for a site that needs a client of its own (its
// CA trusted, a protocol).
func doWith(t *testing.T, c *http.Client, method, url string, body string, headers ...string) response {
	t.Helper()
	r, err := tryDoWith(c, method, url, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDoWith is tryDo through c.
func tryDoWith(c *http.Client, method, url string, body string, headers ...string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading body: %w", method, url, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.json); err != nil {
			return r, fmt.Errorf("%s %s: response is not JSON: %q", method, url, b)
		}
	}
	return r, nil
}

// postJSON submits a message through POST /submit and returns it.
func postJSON(t *testing.T, base, room, user, message string) rooms.Message {
	t.Helper()
	m, err := tryPostJSON(base, room, user, message)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tryPostJSON is postJSON for goroutines other than the test's.
func tryPostJSON(base, room, user, message string) (rooms.Message, error) {
	body, _ := json.Marshal(map[string]string{"room": room, "user": user, "message": message})
	resp, err := tryDo("POST", base+"/submit", string(body), "Content-Type", "application/json")
	if err != nil {
		return rooms.Message{}, err
	}
	if resp.status != http.StatusCreated {
		return rooms.Message{}, fmt.Errorf("submit to %s: %d %s", room, resp.status, resp.body)
	}
	var m rooms.Message
	if err := json.Unmarshal([]byte(resp.body), &m); err != nil {
		return rooms.Message{}, fmt.Errorf("submit to %s: %w", room, err)
	}
	return m, nil
}

// stream is an open SSE stream, read by the WHATWG rules.
type stream struct {
	resp   *http.Response
	events <-chan sse.Received
	cancel context.CancelFunc
}

func openStream(t *testing.T, url string, headers ...string) *stream {
	t.Helper()
	return openStreamWith(t, http.DefaultClient, url, headers...)
}

// openStreamWith is openStream through client.
func openStreamWith(t *testing.T, c *http.Client, url string, headers ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	// The response head, or a refusal's body, must come at once; the
	// stream's events have deadlines of their own (next, end, quiet).
	timer := time.AfterFunc(wait, cancel)
	resp, err := c.Do(req)
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
	if !timer.Stop() {
		cancel()
		t.Fatalf("GET %s: no response head within %v", url, wait)
	}
	s := &stream{resp: resp, events: readEvents(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s
}

// getStream opens url for a test that reads the raw body itself. Every read
// of the body fails once the test has run for a while, so a stream that
// stalls fails the test instead of hanging it.
func getStream(t *testing.T, url string, headers ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
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
	ev, err := s.tryNext()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// tryNext is next for goroutines other than the test's.
func (s *stream) tryNext() (sse.Received, error) {
	select {
	case ev, ok := <-s.events:
		if !ok {
			return ev, errors.New("stream ended while an event was expected")
		}
		return ev, nil
	case <-time.After(wait):
		return sse.Received{}, fmt.Errorf("no event within %v", wait)
	}
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

// tryEventIDs reads n message events and returns their ids, comma-separated,
// without decoding the data: for streams too heavy to decode, read from
// goroutines other than the test's.
func (s *stream) tryEventIDs(n int) (string, error) {
	var b strings.Builder
	for i := range n {
		ev, err := s.tryNext()
		if err != nil {
			return b.String(), err
		}
		if ev.Name != "message" {
			return b.String(), fmt.Errorf("event %q where a message was expected", ev.Name)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ev.ID)
	}
	return b.String(), nil
}

// quiet asserts that the stream stays open and sends no event for a
// moment.
func (s *stream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended where it should have stayed open and quiet")
		}
		t.Fatalf("unexpected event %q: %s", ev.Name, ev.Data)
	case <-time.After(d):
	}
}

// end waits for the server to end the stream and returns the events that
// came before the end.
func (s *stream) end(t *testing.T) []sse.Received {
	t.Helper()
	return s.endWithin(t, wait)
}

// endWithin is end with a deadline of d.
func (s *stream) endWithin(t *testing.T, d time.Duration) []sse.Received {
	t.Helper()
	var evs []sse.Received
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-timeout:
			t.Fatal("the stream did not end within", d)
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
	return metricAt(t, client, rootSite+"/metrics", series)
}

// metricAt is metric scraped from url through c.
func metricAt(t *testing.T, c *http.Client, url, series string) float64 {
	t.Helper()
	resp := doWith(t, c, "GET", url, "")
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
