package chat

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/caddy-chat/caddy-chat/internal/intervaltest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// site is a Caddyfile written the way people write one for a real site:
// HTTPS with Caddy's own CA, an access log, compression and header rules
// that are applied when the response head is written (-, ? and >).
type site struct {
	dir     string // logs
	global  string // chat global options
	handler string // chat handler options
	options string // more global options
	site    string // more directives for the site
	format  string // of the access log; default json
}

// siteAddr is where the HTTPS site listens.
var siteAddr = "localhost:" + httpsPort

func (s site) String() string {
	format := s.format
	if format == "" {
		format = "json"
	}
	return fmt.Sprintf(`{
	%s
	log default {
		output file %s
		format json
	}
	%s
	chat {
		%s
	}
}
https://%s {
	tls internal
	log {
		output file %s
		format %s
	}
	encode gzip zstd
	header {
		-Server
		?X-Test yes
		>X-Defer yes
	}
	%s
	chat {
		%s
	}
}
`, testGlobals(), filepath.Join(s.dir, "caddy.log"),
		s.options, s.global, siteAddr, filepath.Join(s.dir, "access.log"), format, s.site, s.handler)
}

// startSite loads s and waits until the site has its certificate, which
// Caddy obtains in the background.
func startSite(t *testing.T, s site) {
	t.Helper()
	startCaddy(t, s)
	waitFor(t, "the site's certificate", func() bool {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", siteAddr, siteTLS(t))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// siteTLS is a TLS client config trusting the CA that `tls internal` made
// in the run's storage.
func siteTLS(t *testing.T, protos ...string) *tls.Config {
	t.Helper()
	return storageTLS(t, filepath.Join(testRun.dir, "storage"), protos...)
}

// storageTLS is a TLS client config trusting the CA that `tls internal`
// made in storage.
func storageTLS(t *testing.T, storage string, protos ...string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("reading the local CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the local CA's root.crt")
	}
	return &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: protos}
}

// siteClient speaks proto to the site, nothing else: "HTTP/1.1",
// "HTTP/2.0", or "HTTP/3.0" through quic-go's client, as browsers do once
// they have seen Alt-Svc.
func siteClient(t *testing.T, proto string) *http.Client {
	t.Helper()
	if proto == "HTTP/3.0" {
		tr := &http3.Transport{TLSClientConfig: siteTLS(t)}
		t.Cleanup(func() { tr.Close() })
		return &http.Client{Transport: tr}
	}
	http2 := proto == "HTTP/2.0"
	tr := &http.Transport{TLSClientConfig: siteTLS(t), ForceAttemptHTTP2: http2}
	if !http2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// sitePost posts text to room through c and returns the message.
func sitePost(t *testing.T, c *http.Client, room, text string) rooms.Message {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"room": room, "user": "alice", "message": text})
	resp, err := c.Post("https://"+siteAddr+"/submit", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m rooms.Message
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %d %v", resp.StatusCode, err)
	}
	return m
}

// logLines returns the JSON log lines of file that have msg.
func logLines(t *testing.T, file, msg string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(b), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == msg {
			out = append(out, entry)
		}
	}
	return out
}

// line is a line of a stream's body and when it came.
type line struct {
	text string
	at   time.Time
}

// readLines sends body's lines, with the time each came, until it ends.
func readLines(body io.Reader) <-chan line {
	lines := make(chan line, 1000)
	go func() {
		defer close(lines)
		r := bufio.NewReader(body)
		for {
			s, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- line{s, time.Now()}
		}
	}()
	return lines
}

// TestSiteStreams runs a stream through an HTTPS site with log, encode and
// header rules, over HTTP/1.1 (where the handler takes the connection over),
// HTTP/2 and HTTP/3 (where it writes past the wrappers once the head is out):
// the header rules apply, encode leaves the stream alone, the stream is
// logged once, when it ends, with its status, room and size, and an idle
// stream gets its heartbeat once per interval.
func TestSiteStreams(t *testing.T) {
	const heartbeat = time.Second
	dir := t.TempDir()
	startSite(t, site{dir: dir, global: "heartbeat 1s"})
	for _, tc := range []struct {
		name  string
		proto string
	}{
		{"HTTP/1.1", "HTTP/1.1"},
		{"HTTP/2", "HTTP/2.0"},
		{"HTTP/3", "HTTP/3.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := siteClient(t, tc.proto)
			room := roomFor(t, "a")
			ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+siteAddr+"/stream/"+room, nil)
			req.Header.Set("Accept-Encoding", "gzip, zstd")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != tc.proto || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %d, want %s 200", resp.Proto, resp.StatusCode, tc.proto)
			}
			h := resp.Header
			if h.Get("Server") != "" || h.Get("X-Test") != "yes" || h.Get("X-Defer") != "yes" {
				t.Errorf("Server %q, X-Test %q, X-Defer %q: the header rules were not applied", h.Get("Server"), h.Get("X-Test"), h.Get("X-Defer"))
			}
			if h.Get("Content-Encoding") != "" || !strings.Contains(h.Get("Cache-Control"), "no-transform") || h.Get("Content-Type") != "text/event-stream" {
				t.Errorf("Content-Encoding %q, Cache-Control %q, Content-Type %q: want an unencoded event stream marked no-transform",
					h.Get("Content-Encoding"), h.Get("Cache-Control"), h.Get("Content-Type"))
			}

			lines := readLines(resp.Body)
			next := func() line {
				t.Helper()
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatal("the stream ended")
					}
					return l
				case <-time.After(wait):
					t.Fatal("nothing on the stream within", wait)
				}
				return line{}
			}
			if l := next(); !strings.HasPrefix(l.text, "retry: ") {
				t.Fatalf("stream begins with %q", l.text)
			}
			next() // the blank line after retry
			posted := sitePost(t, c, room, "over "+tc.name)
			for l := next(); !strings.HasPrefix(l.text, "data: ") || !strings.Contains(l.text, posted.ID); l = next() {
			}
			last := next().at // the blank line ends the event
			var gaps []time.Duration
			for len(gaps) < 3 {
				l := next()
				if l.text == "\n" {
					continue
				}
				if l.text != ": ping\n" {
					t.Fatalf("got %q on an idle stream", l.text)
				}
				gaps = append(gaps, l.at.Sub(last))
				last = l.at
			}
			t.Logf("heartbeat gaps: %v", gaps)
			intervaltest.Check(t, "heartbeat", gaps, heartbeat)
			resp.Body.Close()

			// The stream's access log entry, written when it ends.
			accessLog := filepath.Join(dir, "access.log")
			var entry map[string]any
			waitFor(t, "the stream's access log entry", func() bool {
				entry = streamEntry(t, accessLog, room)
				return entry != nil
			})
			// The body: the retry hint, the message, the heartbeats.
			if entry["end"] != "client_left" || entry["status"] != 200.0 || entry["size"].(float64) < float64(len("retry: 1000\n\n")+3*len(": ping\n\n")) {
				t.Errorf("access log entry %v: want end client_left, status 200 and the bytes sent", entry)
			}
			for _, e := range logLines(t, accessLog, "handled request") {
				if e["status"] == 0.0 {
					t.Errorf("access log line with status 0: %v", e)
				}
			}
		})
	}
}

// TestSiteResume: over each protocol a browser may use, a stream that
// resumes with Last-Event-ID gets every message posted since, once and in
// order, then the live ones.
func TestSiteResume(t *testing.T) {
	startSite(t, site{dir: t.TempDir()})
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0", "HTTP/3.0"} {
		t.Run(proto, func(t *testing.T) {
			c := siteClient(t, proto)
			room := roomFor(t, "resume")
			url := "https://" + siteAddr + "/stream/" + room
			s := openStreamWith(t, c, url)
			if s.resp.Proto != proto {
				t.Fatalf("the stream is %s, want %s", s.resp.Proto, proto)
			}
			before := []rooms.Message{sitePost(t, c, room, "one"), sitePost(t, c, room, "two")}
			if got := s.messages(t, 2); ids(got) != ids(before) {
				t.Fatalf("live: %s, want %s", ids(got), ids(before))
			}
			s.close()

			missed := []rooms.Message{sitePost(t, c, room, "three"), sitePost(t, c, room, "four")}
			s = openStreamWith(t, c, url, "Last-Event-ID", before[1].ID)
			want := append(missed, sitePost(t, c, room, "five"))
			if got := s.messages(t, 3); ids(got) != ids(want) || texts(got) != "three,four,five" {
				t.Errorf("resumed after %s: %s (%s), want %s", before[1].ID, ids(got), texts(got), ids(want))
			}
			s.quiet(t, 300*time.Millisecond)
		})
	}
}

// dialSite opens a TLS connection to the site speaking HTTP/1.1, with a
// small receive buffer, so that a client that stops reading soon holds up
// the server's writes.
func dialSite(t *testing.T) *tls.Conn {
	t.Helper()
	c, err := dialTLS(siteAddr, siteTLS(t, "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialTLS is dialSite for any address, and for goroutines other than the
// test's. Every read and write on the connection fails after a while.
func dialTLS(addr string, cfg *tls.Config) (*tls.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return nil, err
	}
	_ = raw.(*net.TCPConn).SetReadBuffer(64 << 10)
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(4 * wait))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// openRawStream sends GET /stream/room on c and reads the response head.
func openRawStream(t *testing.T, c net.Conn, room string) *bufio.Reader {
	t.Helper()
	r, err := tryOpenRawStream(c, siteAddr, room)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryOpenRawStream is openRawStream for goroutines other than the test's.
func tryOpenRawStream(c net.Conn, host, room string) (*bufio.Reader, error) {
	fmt.Fprintf(c, "GET /stream/%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", room, host)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /stream/%s: %d", room, resp.StatusCode)
	}
	return r, nil
}

// TestSiteTLSSlowReader: a client of a taken-over stream over TLS that stops
// reading for a moment under a burst is not cut off (a short write deadline
// would break its TLS connection for good), and then gets every message. The
// burst is more than the server's socket buffers take (4 MiB at most here),
// so the server's writes do wait on the client.
func TestSiteTLSSlowReader(t *testing.T) {
	startSite(t, site{dir: t.TempDir(), handler: "max_message_size 64KiB"})
	room := roomFor(t, "a")
	c := dialSite(t)
	r := openRawStream(t, c, room)
	text := strings.Repeat("x", 64<<10)
	poster := siteClient(t, "HTTP/2.0")
	var want []string
	for range 128 {
		want = append(want, sitePost(t, poster, room, text).ID)
	}
	time.Sleep(300 * time.Millisecond)
	events := readEvents(r)
	for i, id := range want {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended after %d of %d messages", i, len(want))
			}
			if ev.Name != "message" || ev.ID != id {
				t.Fatalf("event %d: %q %q, want message %q", i, ev.Name, ev.ID, id)
			}
		case <-time.After(wait):
			t.Fatalf("message %d of %d did not come", i, len(want))
		}
	}
}

// TestSiteLimitsWaitForStart: a config that fails to start (its port is
// taken) leaves the running config's limits as they were.
func TestSiteLimitsWaitForStart(t *testing.T) {
	dir := t.TempDir()
	startSite(t, site{dir: dir, global: "max_subscribers 2"})
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	failing := site{dir: dir, global: "max_subscribers 100"}.String() +
		fmt.Sprintf("http://%s {\n\trespond ok\n}\n", taken.Addr())
	if err := loadCaddyfile(failing); err == nil {
		t.Fatal("a config on a taken port loaded")
	}
	c := siteClient(t, "HTTP/1.1")
	room := roomFor(t, "a")
	var statuses []int
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+siteAddr+"/stream/"+room, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if fmt.Sprint(statuses) != "[200 200 503]" {
		t.Errorf("3 streams with max_subscribers 2 kept: %v, want [200 200 503]", statuses)
	}
}

// TestCLIStopWithStuckTLSStreams: caddy stop returns in under 2 s with 1,000
// streams open over HTTPS, 100 of them stuck: their clients read nothing and
// their sockets are full, so closing them politely (TLS close_notify) would
// wait on each.
func TestCLIStopWithStuckTLSStreams(t *testing.T) {
	const streams, stuck = 1000, 100
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	admin, addr := "localhost:"+freePort(), "localhost:"+freePort()
	cfg := fmt.Sprintf(`{
	admin %s
	persist_config off
	storage file_system %s
	skip_install_trust
	http_port %s
}
https://%s {
	tls internal
	chat {
		max_message_size 64KiB
		max_streams_per_client %d
	}
}
`, admin, storage, freePort(), addr, streams)
	_, exited := launchBinary(t, dir, cfg)
	var tlsConfig *tls.Config
	waitFor(t, "caddy to serve HTTPS", func() bool {
		if _, err := os.Stat(filepath.Join(storage, "pki", "authorities", "local", "root.crt")); err != nil {
			return false
		}
		tlsConfig = storageTLS(t, storage, "http/1.1")
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, tlsConfig)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// Every stream is a raw HTTP/1.1 client over TLS; all but the stuck
	// ones read until the stream ends.
	var opened, ended sync.WaitGroup
	conns := make([]*tls.Conn, streams)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	handshakes := make(chan struct{}, 20) // as many at once as the listener's backlog takes
	for i := range streams {
		opened.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			handshakes <- struct{}{}
			c, err := dialTLS(addr, tlsConfig)
			if err != nil {
				<-handshakes
				opened.Done()
				t.Errorf("stream %d: %v", i, err)
				return
			}
			conns[i] = c
			room := fmt.Sprintf("room%d", i%10)
			if i < stuck {
				room = "stuck"
			}
			r, err := tryOpenRawStream(c, addr, room)
			<-handshakes
			opened.Done()
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
				return
			}
			if i < stuck {
				return
			}
			// A backstop: opening 1,000 TLS streams on a loaded machine takes
			// a while; the deadline that counts is set after the stop.
			_ = c.SetReadDeadline(time.Now().Add(12 * wait))
			for err == nil {
				_, err = r.ReadString('\n')
			}
			if !errors.Is(err, io.EOF) {
				t.Errorf("stream %d ended with %v, want EOF", i, err)
			}
		}()
	}
	if !waitGroup(&opened, 12*wait) {
		t.Fatal("streams did not open in time")
	}
	if t.Failed() {
		t.FailNow()
	}
	// Far more than the stuck clients' sockets hold.
	poster := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: wait}
	text := strings.Repeat("x", 64<<10)
	for range 50 {
		body, _ := json.Marshal(map[string]string{"room": "stuck", "user": "alice", "message": text})
		resp, err := poster.Post("https://"+addr+"/submit", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("submit: %d", resp.StatusCode)
		}
	}
	time.Sleep(300 * time.Millisecond) // the writes to the stuck streams block

	start := time.Now()
	out, err := exec.Command(caddyBinary(t), "stop", "--address", admin).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("caddy stop: %v\n%s", err, out)
	}
	t.Logf("caddy stop with %d streams open, %d stuck over TLS, took %v", streams, stuck, took)
	for _, c := range conns {
		if c != nil {
			_ = c.SetReadDeadline(time.Now().Add(wait))
		}
	}
	if took > 2*time.Second {
		t.Errorf("caddy stop took %v, want under 2s", took)
	}
	if !waitGroup(&ended, wait) {
		t.Error("streams still open after caddy stop")
	}
	select {
	case <-exited:
	case <-time.After(wait):
		t.Error("caddy did not exit")
	}
}
