package chat

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStreamOverHTTP2: an HTTP/2 stream cannot be taken over and stays in
// the request path; it keeps the same contract: replay, live messages,
// heartbeats and the close event.
func TestStreamOverHTTP2(t *testing.T) {
	startCaddy(t, config{global: "heartbeat 100ms", handler: "allow_delete", options: "servers {\n\t\tprotocols h1 h2c\n\t}"})
	room := roomFor(t, "a")
	first := postJSON(t, rootSite, room, "alice", "before")

	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	defer transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", rootSite+"/stream/"+room+"?history=1", nil)
	resp, err := transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s %s, want an HTTP/2 event stream", resp.Proto, resp.Header.Get("Content-Type"))
	}
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
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	defer transport.CloseIdleConnections()
	req, _ := http.NewRequest("GET", rootSite+"/stream/"+roomFor(t, "a"), nil)
	resp, err := transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s, want HTTP/2", resp.Proto)
	}
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
