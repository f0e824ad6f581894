package chat

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/internal/intervaltest"
)

// TestStreamOverHTTP2: an HTTP/2 stream cannot be taken over and stays in
// the request path; it keeps the same contract: replay, live messages,
// heartbeats and the close event.
func TestStreamOverHTTP2(t *testing.T) {
	startCaddy(t, config{global: "heartbeat 100ms", handler: "allow_delete", options: "servers {\n\t\tprotocols h1 h2c\n\t}"})
	room := roomFor(t, "a")
	first := postJSON(t, rootSite, room, "alice", "before")

	resp := openH2CStream(t, rootSite+"/stream/"+room+"?history=1")
	var comments atomic.Int32
	events := readEvents(io.TeeReader(resp.Body, commentCounter{&comments}))
	next := func() (ev struct{ name, id, data string }) {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("the stream ended early")
			}
			ev.name, ev.id, ev.data = e.Name, e.ID, e.Data
		case <-time.After(wait):
			t.Fatal("no event")
		}
		return ev
	}
	if ev := next(); ev.id != first.ID {
		t.Fatalf("replay: %+v, want %s", ev, first.ID)
	}
	live := postJSON(t, rootSite, room, "bob", "live")
	if ev := next(); ev.id != live.ID {
		t.Fatalf("live: %+v, want %s", ev, live.ID)
	}
	waitFor(t, "heartbeats", func() bool { return comments.Load() >= 2 })
	do(t, "DELETE", rootSite+"/room/"+room, "")
	if ev := next(); ev.name != "close" || ev.data != "{}" {
		t.Errorf("after delete: %+v, want the close event", ev)
	}
	select {
	case _, ok := <-events:
		if ok {
			t.Error("an event after close")
		}
	case <-time.After(wait):
		t.Error("the stream did not end after close")
	}
}

// openH2CStream opens url over HTTP/2 without TLS (h2c). Every read of the
// body fails once the test has run for a while, so a stalled stream fails
// the test instead of hanging it; an answer that is not an HTTP/2 event
// stream fails it at once.
func openH2CStream(t *testing.T, url string) *http.Response {
	t.Helper()
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(transport.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s %d %s, want an HTTP/2 event stream", url, resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// commentCounter counts the heartbeat comments that pass through it.
type commentCounter struct{ n *atomic.Int32 }

func (c commentCounter) Write(b []byte) (int, error) {
	c.n.Add(int32(strings.Count(string(b), ": ping\n\n")))
	return len(b), nil
}

// TestHTTP2StreamEndsOnReload: a stream in the request path ends when its
// config stops, so that Caddy's shutdown, whose grace period is eternal by
// default, never waits on it.
func TestHTTP2StreamEndsOnReload(t *testing.T) {
	cfg := config{options: "servers {\n\t\tprotocols h1 h2c\n\t}"}
	startCaddy(t, cfg)
	resp := openH2CStream(t, rootSite+"/stream/"+roomFor(t, "a"))
	ended := make(chan struct{})
	go func() { io.Copy(io.Discard, resp.Body); close(ended) }()
	cfg.global = "heartbeat 20s"
	if took := reload(t, cfg); took > 3*time.Second {
		t.Errorf("the reload took %v with an HTTP/2 stream open", took)
	}
	select {
	case <-ended:
	case <-time.After(wait):
		t.Fatal("the HTTP/2 stream is still open after the reload")
	}
}

// TestHTTP2StuckStreamEndsOnReload: an HTTP/2 stream whose client reads
// nothing (it grants no flow-control window, so the server's first write
// blocks) still ends at once when its config stops, instead of holding the
// old server's shutdown for the write timeout.
func TestHTTP2StuckStreamEndsOnReload(t *testing.T) {
	cfg := config{options: "servers {\n\t\tprotocols h1 h2c\n\t}"}
	startCaddy(t, cfg)
	s := openStuckH2CStream(t, "/stream/"+roomFor(t, "a"), 0)
	cfg.global = "heartbeat 20s"
	start := time.Now()
	reload(t, cfg)
	// The stream ends with RST_STREAM, or the connection closes, well
	// before the write timeout (10s) would have ended it.
	s.waitEnd()
	took := time.Since(start)
	t.Logf("a stuck HTTP/2 stream ended %v after the reload began", took)
	if took > wait {
		t.Errorf("a stuck HTTP/2 stream ended %v after the reload began", took)
	}
}

// TestHTTP2StuckStreamTimesOut: an HTTP/2 client that takes the start of its
// stream and then reads nothing more has its stream reset once a write has
// waited for the write timeout, not held open for ever: whether the
// watchdog that the start armed fires a third of the way into the stuck
// write, which must still get all of its time, or fired while the stream
// was idle and disarmed, so that the stuck write must arm it again.
func TestHTTP2StuckStreamTimesOut(t *testing.T) {
	for _, tt := range []struct {
		name      string
		heartbeat string
		idle      time.Duration // between the start and the stuck write
	}{
		{"watchdog fires during the write", "30s", writeTimeout / 3},
		{"watchdog fired while idle", "60s", writeTimeout + time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			startCaddy(t, config{global: "heartbeat " + tt.heartbeat, options: "servers {\n\t\tprotocols h1 h2c\n\t}"})
			room := roomFor(t, "a")
			// Room for the retry hint, "retry: 1234\n\n", and not for a message.
			s := openStuckH2CStream(t, "/stream/"+room, 16)
			time.Sleep(tt.idle)
			postJSON(t, rootSite, room, "alice", "never read")
			start := time.Now()
			s.waitEnd()
			took := time.Since(start)
			t.Logf("a stuck HTTP/2 stream ended %v after its write began", took)
			if took < writeTimeout*9/10 || took > writeTimeout+wait {
				t.Errorf("a stuck HTTP/2 stream ended %v after its write began, want after the write timeout, %v", took, writeTimeout)
			}
		})
	}
}

// stuckH2CStream is an HTTP/2 stream, over h2c, whose client grants the
// server only so many bytes of flow-control window and never more.
type stuckH2CStream struct {
	c    net.Conn
	r    *bufio.Reader
	head []byte
}

// openStuckH2CStream opens path with a flow-control window of window bytes
// for the stream and returns once the response head has arrived, which flow
// control does not hold. The connection fails the test's reads after a while.
func openStuckH2CStream(t *testing.T, path string, window uint32) *stuckH2CStream {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(rootSite, "http://"), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(writeTimeout + 4*wait))
	authority := strings.TrimPrefix(rootSite, "http://")
	// HPACK, by hand: :method GET and :scheme http from the static table,
	// :path and :authority as literals with indexed names.
	block := []byte{0x82, 0x86, 0x04, byte(len(path))}
	block = append(block, path...)
	block = append(block, 0x01, byte(len(authority)))
	block = append(block, authority...)
	var out []byte
	out = append(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	// SETTINGS_INITIAL_WINDOW_SIZE
	out = append(out, h2Frame(0x4, 0, 0, []byte{0, 4, byte(window >> 24), byte(window >> 16), byte(window >> 8), byte(window)})...)
	out = append(out, h2Frame(0x1, 0x5, 1, block)...) // HEADERS, END_STREAM|END_HEADERS
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	s := &stuckH2CStream{c: c, r: bufio.NewReader(c), head: make([]byte, 9)}
	for {
		if _, err := io.ReadFull(s.r, s.head); err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		n := int(s.head[0])<<16 | int(s.head[1])<<8 | int(s.head[2])
		if _, err := s.r.Discard(n); err != nil {
			t.Fatal(err)
		}
		if s.head[3] == 0x4 && s.head[4]&0x1 == 0 { // the server's SETTINGS: ack it
			if _, err := c.Write(h2Frame(0x4, 0x1, 0, nil)); err != nil {
				t.Fatal(err)
			}
		}
		if s.head[3] == 0x1 { // HEADERS
			return s
		}
	}
}

// waitEnd reads frames until the stream is reset or the connection closes.
func (s *stuckH2CStream) waitEnd() {
	for {
		if _, err := io.ReadFull(s.r, s.head); err != nil {
			return
		}
		n := int(s.head[0])<<16 | int(s.head[1])<<8 | int(s.head[2])
		if _, err := s.r.Discard(n); err != nil {
			return
		}
		if s.head[3] == 0x3 { // RST_STREAM
			return
		}
	}
}

// h2Frame is an HTTP/2 frame.
func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	f := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
		byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
	return append(f, payload...)
}

// TestHTTP2IdleStreamOutlivesWriteTimeout: an HTTP/2 stream with nothing to
// say stays open past the write timeout, until its heartbeat. HTTP/2 arms a
// timer for a write deadline and resets the stream when it passes, written
// or not, so a deadline left behind by the last write would end every idle
// stream after 10 s, before a 15 s heartbeat.
func TestHTTP2IdleStreamOutlivesWriteTimeout(t *testing.T) {
	startCaddy(t, config{global: "heartbeat 15s", options: "servers {\n\t\tprotocols h1 h2c\n\t}"})
	resp := openH2CStream(t, rootSite+"/stream/"+roomFor(t, "a"))
	s := &stream{resp: resp, events: readEvents(resp.Body), cancel: func() {}}
	s.quiet(t, writeTimeout+1500*time.Millisecond)
}

// TestHTTP2StreamsKeepTime: the app's sweeper keeps the time of every
// HTTP/2 stream: an idle one is pinged each heartbeat interval, on average
// within a tenth of it, and meanwhile another one, whose client stopped
// reading, is reset once its write has waited for the write timeout, within
// a tenth of that.
func TestHTTP2StreamsKeepTime(t *testing.T) {
	const interval = 2 * time.Second
	startCaddy(t, config{global: "heartbeat 2s", options: "servers {\n\t\tprotocols h1 h2c\n\t}"})
	opened := time.Now()
	resp := openH2CStream(t, rootSite+"/stream/"+roomFor(t, "idle"))
	pings := make(chan time.Time, 16)
	go func() {
		defer close(pings)
		buf := make([]byte, 512)
		for {
			n, err := resp.Body.Read(buf)
			for range strings.Count(string(buf[:n]), ": ping\n\n") {
				pings <- time.Now()
			}
			if err != nil {
				return
			}
		}
	}()

	room := roomFor(t, "stuck")
	// Room for the retry hint, "retry: 1234\n\n", and not for a message.
	s := openStuckH2CStream(t, "/stream/"+room, 16)
	postJSON(t, rootSite, room, "alice", "never read")
	start := time.Now()
	s.waitEnd()
	if took := time.Since(start); took < writeTimeout*9/10 || took > writeTimeout+writeTimeout/10 {
		t.Errorf("a stuck HTTP/2 stream ended %v after its write began, want after the write timeout, %v, within a tenth", took, writeTimeout)
	}

	last := opened
	var gaps []time.Duration
	for i := range 5 {
		var at time.Time
		select {
		case at = <-pings:
		case <-time.After(2 * interval):
			t.Fatalf("no heartbeat %d", i+1)
		}
		gaps = append(gaps, at.Sub(last))
		last = at
	}
	intervaltest.Check(t, "heartbeat", gaps, interval)
}
