package chat

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/proto/chat/v1/chatv1connect"
)

// TestAccessLogStreams: a stream over HTTP/1.1 (taken over), HTTP/2, HTTP/3
// and gRPC leaves exactly one entry in its site's access log when it ends,
// in the shape of Caddy's own: the site's logger, the request with its
// credentials redacted, status 200, the body's bytes as the client received
// them, the duration and the response headers, with the room and why the
// stream ended.
func TestAccessLogStreams(t *testing.T) {
	dir := t.TempDir()
	startSite(t, site{dir: dir, handler: "grpc on\n\t\tallow_delete"})
	accessLog := filepath.Join(dir, "access.log")
	poster := siteClient(t, "HTTP/1.1")
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0", "HTTP/3.0"} {
		t.Run(proto, func(t *testing.T) {
			body := &bodyCounter{RoundTripper: siteClient(t, proto).Transport}
			room := roomFor(t, "a")
			s := openStreamWith(t, &http.Client{Transport: body}, "https://"+siteAddr+"/stream/"+room, "Cookie", "session=secret")
			posted := sitePost(t, poster, room, "over "+proto)
			if got := s.messages(t, 1); got[0].ID != posted.ID {
				t.Fatalf("got %s, want %s", got[0].ID, posted.ID)
			}
			deleteSiteRoom(t, poster, room)
			if evs := s.end(t); len(evs) != 1 || evs[0].Name != "close" {
				t.Fatalf("the stream ended with %v, want the close event", evs)
			}
			entry := waitStreamEntry(t, accessLog, room)
			checkStreamEntry(t, entry, proto+" GET /stream/"+room, room, "room_deleted", body.n.Load())
			if ct := entryHeader(entry, "resp_headers", "Content-Type"); ct != "text/event-stream" || entry["bytes_read"] != 0.0 {
				t.Errorf("resp_headers Content-Type %q, bytes_read %v: want text/event-stream, 0", ct, entry["bytes_read"])
			}
			if cookie := entryHeader(entry, "request", "Cookie"); cookie != "REDACTED" {
				t.Errorf("request Cookie %q, want it redacted", cookie)
			}
		})
	}
	t.Run("gRPC", func(t *testing.T) {
		body := &bodyCounter{RoundTripper: siteClient(t, "HTTP/2.0").Transport}
		c := chatv1connect.NewChatServiceClient(&http.Client{Transport: body}, "https://"+siteAddr, connect.WithGRPC())
		room := roomFor(t, "a")
		// The stream opens with a message: behind encode, a response's
		// head goes out with its first bytes.
		first := sitePost(t, poster, room, "before gRPC")
		s := openRPCStream(t, c, &chatv1.StreamRequest{Room: room, History: 1})
		posted := sitePost(t, poster, room, "over gRPC")
		for _, want := range []string{first.ID, posted.ID} {
			if got := s.next(t).GetMessage(); got.GetId() != want {
				t.Fatalf("got %v, want %s", got, want)
			}
		}
		deleteSiteRoom(t, poster, room)
		if ev := s.next(t); ev.GetClosed() == nil {
			t.Fatalf("got %v, want the closed event", ev)
		}
		if err := s.end(t, wait); err != nil {
			t.Fatalf("the stream ended with %v", err)
		}
		const uri = "/chat.v1.ChatService/Stream"
		entry := waitStreamEntry(t, accessLog, room)
		checkStreamEntry(t, entry, "HTTP/2.0 POST "+uri, room, "room_deleted", body.n.Load())
		if ct := entryHeader(entry, "resp_headers", "Content-Type"); ct != "application/grpc" || entry["bytes_read"].(float64) <= 0 {
			t.Errorf("resp_headers Content-Type %q, bytes_read %v: want application/grpc and the request's bytes", ct, entry["bytes_read"])
		}
		calls := 0
		for _, e := range logLines(t, accessLog, "handled request") {
			if req, _ := e["request"].(map[string]any); req["uri"] == uri {
				calls++
			}
		}
		if calls != 1 {
			t.Errorf("%d access log entries for the one Stream call, want 1", calls)
		}
	})
}

// TestAccessLogSkip: log_skip on the stream path leaves streams out of the
// access log, over every protocol, while the site's other requests are in.
func TestAccessLogSkip(t *testing.T) {
	dir := t.TempDir()
	startSite(t, site{dir: dir, site: "log_skip /stream/*"})
	accessLog := filepath.Join(dir, "access.log")
	poster := siteClient(t, "HTTP/1.1")
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0", "HTTP/3.0"} {
		t.Run(proto, func(t *testing.T) {
			room := roomFor(t, "a")
			s := openStreamWith(t, siteClient(t, proto), "https://"+siteAddr+"/stream/"+room)
			sitePost(t, poster, room, "over "+proto)
			s.messages(t, 1)
			s.close()
			// A stream writes its entry before it gives up its subscription.
			waitFor(t, "the stream to end", func() bool { return siteSubscribers(t, poster, room) == 0 })
			if entries := streamEntries(t, accessLog, room); len(entries) != 0 {
				t.Errorf("log_skip, yet the stream is in the access log: %v", entries)
			}
			posts := 0
			for _, e := range logLines(t, accessLog, "handled request") {
				if req, _ := e["request"].(map[string]any); req["uri"] == "/submit" {
					posts++
				}
			}
			if posts == 0 {
				t.Error("the site's posts are not in the access log either")
			}
		})
	}
}

// checkStreamEntry checks what a stream's access log entry says: the
// request ("proto method uri"), the room, why it ended and the bytes of body
// the client received.
func checkStreamEntry(t *testing.T, entry map[string]any, request, room, end string, received int64) {
	t.Helper()
	req, _ := entry["request"].(map[string]any)
	if got := fmt.Sprint(req["proto"], " ", req["method"], " ", req["uri"]); entry["logger"] != "http.log.access.log0" || got != request || req["client_ip"] == "" {
		t.Errorf("access log entry %v: want the site's logger, and the request %s with its client_ip", entry, request)
	}
	if entry["status"] != 200.0 || entry["size"] != float64(received) || entry["room"] != room || entry["end"] != end {
		t.Errorf("status %v, size %v, room %v, end %v: want 200, the %d bytes received, %s, %s",
			entry["status"], entry["size"], entry["room"], entry["end"], received, room, end)
	}
	if d, _ := entry["duration"].(float64); d <= 0 {
		t.Errorf("duration %v, want the stream's", entry["duration"])
	}
	if _, ok := entry["user_id"]; !ok {
		t.Error("no user_id")
	}
}

// entryHeader is the first value of a header that a log entry holds: of the
// request's ("request") or of the response's ("resp_headers").
func entryHeader(entry map[string]any, of, name string) string {
	h, _ := entry[of].(map[string]any)
	if of == "request" {
		h, _ = h["headers"].(map[string]any)
	}
	values, _ := h[name].([]any)
	if len(values) == 0 {
		return ""
	}
	s, _ := values[0].(string)
	return s
}

// streamEntries returns the access log entries of room's streams: the
// chat's, which name the room, and Caddy's own for an event stream of the
// room, which would be a second.
func streamEntries(t *testing.T, file, room string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range logLines(t, file, "handled request") {
		if req, _ := e["request"].(map[string]any); e["room"] == room || req["uri"] == "/stream/"+room {
			out = append(out, e)
		}
	}
	return out
}

// streamEntry returns the access log entry of room's one stream, nil if it
// has none yet; more than one fails the test.
func streamEntry(t *testing.T, file, room string) map[string]any {
	t.Helper()
	entries := streamEntries(t, file, room)
	if len(entries) > 1 {
		t.Fatalf("%d access log entries for the one stream of room %s, want 1: %v", len(entries), room, entries)
	}
	if len(entries) == 0 {
		return nil
	}
	return entries[0]
}

// waitStreamEntry waits for the access log entry of room's one stream.
func waitStreamEntry(t *testing.T, file, room string) map[string]any {
	t.Helper()
	var entry map[string]any
	waitFor(t, "the stream's access log entry", func() bool {
		entry = streamEntry(t, file, room)
		return entry != nil
	})
	return entry
}

// deleteSiteRoom deletes room through c.
func deleteSiteRoom(t *testing.T, c *http.Client, room string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, "https://"+siteAddr+"/room/"+room, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE /room/%s: %d", room, resp.StatusCode)
	}
}

// siteSubscribers is how many streams room has open, as GET /rooms says.
func siteSubscribers(t *testing.T, c *http.Client, room string) int {
	t.Helper()
	resp, err := c.Get("https://" + siteAddr + "/rooms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Rooms []struct {
			Name        string `json:"name"`
			Subscribers int    `json:"subscribers"`
		} `json:"rooms"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("GET /rooms: %v", err)
	}
	for _, r := range list.Rooms {
		if r.Name == room {
			return r.Subscribers
		}
	}
	return 0
}

// bodyCounter is a client's transport that counts the bytes of response
// body its client reads.
type bodyCounter struct {
	http.RoundTripper
	n atomic.Int64
}

func (c *bodyCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.RoundTripper.RoundTrip(req)
	if err == nil {
		resp.Body = &countedReader{ReadCloser: resp.Body, n: &c.n}
	}
	return resp, err
}

type countedReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countedReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// TestAccessLogFilter: the access log's filters apply to a stream's entry
// as to any other.
func TestAccessLogFilter(t *testing.T) {
	dir := t.TempDir()
	startSite(t, site{dir: dir, format: `filter {
			wrap json
			fields {
				request>headers>User-Agent delete
				room replace hidden
			}
		}`})
	accessLog := filepath.Join(dir, "access.log")
	room := roomFor(t, "a")
	c := siteClient(t, "HTTP/1.1")
	s := openStreamWith(t, c, "https://"+siteAddr+"/stream/"+room)
	sitePost(t, c, room, "filtered")
	s.messages(t, 1)
	s.close()
	var entry map[string]any
	waitFor(t, "the stream's access log entry", func() bool {
		for _, e := range logLines(t, accessLog, "handled request") {
			if req, _ := e["request"].(map[string]any); req["uri"] == "/stream/"+room {
				entry = e
			}
		}
		return entry != nil
	})
	if ua := entryHeader(entry, "request", "User-Agent"); ua != "" || entry["room"] != "hidden" || entry["end"] != "client_left" {
		t.Errorf("User-Agent %q, room %v, end %v: want the User-Agent deleted, the room replaced, end client_left", ua, entry["room"], entry["end"])
	}
}

// TestKeptHeaderIsBounded: a stream's entry keeps at most maxKeptHeader
// bytes of the request's headers, whatever the client sent, and all of
// them when they fit.
func TestKeptHeaderIsBounded(t *testing.T) {
	small := http.Header{"Accept": {"text/event-stream"}, "Cookie": {"a=b"}}
	if got := keptHeader(small, maxKeptHeader); !reflect.DeepEqual(got, small) {
		t.Errorf("kept %v of %v, want all of it", got, small)
	}
	hostile := http.Header{}
	for i := range 3000 {
		hostile.Add(fmt.Sprintf("X-%d", i), "")
	}
	hostile.Set("X-Big", strings.Repeat("v", 8<<10))
	kept, size := keptHeader(hostile, maxKeptHeader), 0
	for name, values := range kept {
		for _, v := range values {
			size += len(name) + len(v)
		}
	}
	if size > maxKeptHeader || len(kept) == 0 {
		t.Errorf("kept %d fields, %d bytes, of a hostile header; want some, at most %d bytes", len(kept), size, maxKeptHeader)
	}
}
