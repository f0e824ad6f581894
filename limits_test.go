package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSquattingLeavesNoRooms: streams to made-up room names, opened and
// closed, leave no room behind, so one client cannot fill max_rooms with
// them; a room someone posted to stays.
func TestSquattingLeavesNoRooms(t *testing.T) {
	startCaddy(t, config{})
	existing := len(do(t, "GET", rootSite+"/rooms", "").json["rooms"].([]any))
	const squats = 50
	startCaddy(t, config{global: fmt.Sprintf("max_rooms %d", existing+5)})
	for i := range squats {
		s := openStream(t, rootSite+"/stream/"+roomFor(t, fmt.Sprint("squat", i)))
		s.close()
		// The server notices the close in its own time; wait for the room
		// to go before the next, so that max_rooms is never the reason.
		waitFor(t, "the squatted room to be dropped", func() bool {
			return len(do(t, "GET", rootSite+"/rooms", "").json["rooms"].([]any)) <= existing
		})
	}
	kept := roomFor(t, "kept")
	postJSON(t, rootSite, kept, "alice", "hello")
	s := openStream(t, rootSite+"/stream/"+kept)
	s.close()
	waitFor(t, "the server to see the stream closed", func() bool {
		return strings.Contains(do(t, "GET", rootSite+"/rooms", "").body, fmt.Sprintf(`{"name":%q,"subscribers":0`, kept))
	})
	time.Sleep(50 * time.Millisecond)
	if list := do(t, "GET", rootSite+"/rooms", "").body; !strings.Contains(list, `"name":"`+kept+`"`) {
		t.Errorf("a room with a message was dropped with its last stream: %s", list)
	}
}

// TestStreamsPerClient: past max_streams_per_client a client gets 429 with
// Retry-After and a JSON error; a closed stream gives its slot back on both
// the HTTP/1 and the HTTP/2 path and when the stream is refused later on;
// the client is its identity when one resolves, else its address, IPv6 by
// /64, as rate_limit counts it.
func TestStreamsPerClient(t *testing.T) {
	startCaddy(t, config{
		global:  "max_subscribers 100",
		handler: "max_streams_per_client 2\n identity {http.request.header.X-User}\n rate_limit 1 1m",
		options: "servers {\n\t\tprotocols h1 h2c\n\t\ttrusted_proxies static private_ranges\n\t}",
	})
	room := roomFor(t, "a")
	url := rootSite + "/stream/" + room
	tooMany := errorCase{"third stream", "GET", "/stream/" + room, "", nil, 429, "streams open", ""}
	refusedBefore := metric(t, `caddy_chat_rejected_requests_total{reason="too_many_streams"}`)

	a, b := openStream(t, url), openStream(t, url)
	tooMany.check(t, rootSite)
	if got := metric(t, `caddy_chat_rejected_requests_total{reason="too_many_streams"}`); got != refusedBefore+1 {
		t.Errorf("too_many_streams refusals went from %v to %v, want one more", refusedBefore, got)
	}
	// Another identity from the same address has its own streams.
	openStream(t, url, "X-User", "carol")
	openStream(t, url, "X-User", "carol")
	a.close()
	waitFor(t, "the closed HTTP/1 stream's slot to come back", func() bool {
		return status(t, url) == http.StatusOK
	})
	b.close()

	// The HTTP/2 path: its own client, the same address.
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	defer h2.CloseIdleConnections()
	var h2Streams []func()
	defer func() {
		for _, end := range h2Streams {
			end()
		}
	}()
	waitFor(t, "the closed streams' slots to come back", func() bool {
		if end := openH2(t, h2, url); end != nil {
			h2Streams = append(h2Streams, end)
		}
		return len(h2Streams) == 2
	})
	if end := openH2(t, h2, url); end != nil {
		end()
		t.Error("a third stream over HTTP/2 was let through")
	}
	h2Streams[0]()
	waitFor(t, "the closed HTTP/2 stream's slot to come back", func() bool {
		end := openH2(t, h2, url)
		if end != nil {
			h2Streams[0] = end
		}
		return end != nil
	})

	// A client behind a trusted proxy is its address, an IPv6 one its /64.
	fwd := func(ip string) []string { return []string{"X-Forwarded-For", ip} }
	openStream(t, url, fwd("2001:db8:1:2::1")...)
	openStream(t, url, fwd("2001:db8:1:2:ffff::2")...)
	tooMany.headers = fwd("2001:db8:1:2::3")
	tooMany.check(t, rootSite)
	openStream(t, url, fwd("2001:db8:1:3::1")...)
	// rate_limit keys posts the same way.
	post := func(ip string) int {
		body := fmt.Sprintf(`{"room":%q,"message":"hi"}`, room)
		return do(t, "POST", rootSite+"/submit", body, "Content-Type", ctJSON, "X-Forwarded-For", ip).status
	}
	if s := post("2001:db8:9:9::1"); s != http.StatusCreated {
		t.Fatalf("first post: %d", s)
	}
	if s := post("2001:db8:9:9::2"); s != http.StatusTooManyRequests {
		t.Errorf("a post from the same /64: %d, want 429", s)
	}
	if s := post("2001:db8:9:a::1"); s != http.StatusCreated {
		t.Errorf("a post from another /64: %d, want 201", s)
	}
}

// TestRefusedStreamGivesSlotBack: a stream refused after it was counted
// (max_subscribers reached) does not keep its client's slot.
func TestRefusedStreamGivesSlotBack(t *testing.T) {
	startCaddy(t, config{global: "max_subscribers 1", handler: "max_streams_per_client 2\n identity {http.request.header.X-User}"})
	room := roomFor(t, "a")
	openStream(t, rootSite+"/stream/"+room, "X-User", "alice")
	for i := range 4 {
		if s := status(t, rootSite+"/stream/"+room, "X-User", "bob"); s != http.StatusServiceUnavailable {
			t.Fatalf("refused stream %d: %d, want 503 every time", i, s)
		}
	}
}

// status opens url and returns the status, closing whatever it got.
func status(t *testing.T, url string, headers ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// openH2 opens a stream over h2, returning a function that closes it, or
// nil when it was refused.
func openH2(t *testing.T, h2 *http.Transport, url string) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := h2.RoundTrip(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s over h2c: %v", url, err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s, want HTTP/2", resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil
	}
	return func() { resp.Body.Close(); cancel() }
}

// hostile is the largest default message that costs the most to encode:
// JSON escapes each "<" as six bytes, so its frame is about 24 KiB.
var hostile = strings.Repeat("<", DefaultMaxMessageSize)

// TestReplayCappedInBytes: a replay of 100 such messages, about 2.4 MB, is
// sent in pieces of at most 1 MiB; each stream ends after its piece and the
// client, resuming from its last id as EventSource does, gets the rest with
// no gap and no duplicate. The same over HTTP/1 (taken-over connections) and
// HTTP/2 (the request path), for ?history=, Last-Event-ID and a reset.
func TestReplayCappedInBytes(t *testing.T) {
	startCaddy(t, config{global: "history 1000", options: "servers {\n\t\tprotocols h1 h2c\n\t}"})
	room := roomFor(t, "a")
	var want []string
	for range 100 {
		want = append(want, postJSON(t, rootSite, room, "alice", hostile).ID)
	}
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	defer h2.CloseIdleConnections()
	for _, tt := range []struct {
		name      string
		transport http.RoundTripper
		first     string // the first request's query or Last-Event-ID
		from      int    // the index in want it starts from
	}{
		{"HTTP/1 history", http.DefaultTransport, "?history=1000", 0},
		{"HTTP/1 resume", http.DefaultTransport, want[9], 10},
		{"HTTP/1 reset", http.DefaultTransport, "foreign-1", 0},
		{"HTTP/2 history", h2, "?history=1000", 0},
		{"HTTP/2 resume", h2, want[9], 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, lastID := rootSite+"/stream/"+room, tt.first
			if strings.HasPrefix(tt.first, "?") {
				url, lastID = url+tt.first, ""
			}
			got, pieces := resume(t, tt.transport, url, lastID, len(want)-tt.from)
			if got != strings.Join(want[tt.from:], ",") {
				t.Errorf("messages received in pieces differ from those posted:\n got %v\nwant %v", got, want[tt.from:])
			}
			if pieces < 3 {
				t.Errorf("2.4 MB of replay came in %d streams, want at least 3", pieces)
			}
		})
	}

	// The history API says where to go on instead of dropping the rest.
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("too many pages")
		}
		resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages?limit=1000&after="+after, "")
		if len(resp.body) > 1<<20 {
			t.Errorf("a history answer is %d bytes, over the 1 MiB cap", len(resp.body))
		}
		var page struct {
			Messages []struct{ ID string }
			More     bool
		}
		if err := json.Unmarshal([]byte(resp.body), &page); err != nil || len(page.Messages) == 0 {
			t.Fatalf("page %d: %v, %d messages", pages, err, len(page.Messages))
		}
		for _, m := range page.Messages {
			got = append(got, m.ID)
		}
		if !page.More {
			break
		}
		after = got[len(got)-1]
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("messages paged through the API differ from those posted: got %d, want %d", len(got), len(want))
	}
}

// resume follows url as EventSource does until it has n messages: from
// lastID, or as url says when it is empty, then from the last id of each
// stream that ends. Each stream's replay must stay within the 1 MiB cap. It
// returns the ids, comma-separated, and how many streams carried them.
func resume(t *testing.T, rt http.RoundTripper, url, lastID string, n int) (ids string, pieces int) {
	t.Helper()
	var got []string
	for ; len(got) < n; pieces++ {
		if pieces > 50 {
			t.Fatalf("still short after %d streams: %d of %d", pieces, len(got), n)
		}
		piece, size := replayPiece(t, rt, url, lastID, n-len(got))
		if size > 1<<20+200 {
			t.Errorf("one stream sent %d bytes of replay, over the 1 MiB cap", size)
		}
		if len(piece) == 0 {
			t.Fatal("a stream sent no message")
		}
		got = append(got, piece...)
		lastID = piece[len(piece)-1]
		url, _, _ = strings.Cut(url, "?")
	}
	return strings.Join(got, ","), pieces
}

// replayPiece opens a stream and reads message ids until it ends, or until
// it has n; it returns them and the bytes of body that carried them.
func replayPiece(t *testing.T, rt http.RoundTripper, url, lastID string, n int) (ids []string, size int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	var read atomic.Int64
	events := readEvents(io.TeeReader(resp.Body, countWriter{&read}))
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return ids, read.Load()
			}
			if ev.Name == "message" {
				ids = append(ids, ev.ID)
			}
			if len(ids) == n {
				return ids, read.Load()
			}
		case <-ctx.Done():
			t.Fatalf("the stream neither ended nor sent %d messages: %d", n, len(ids))
		}
	}
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// TestIdempotencyKeyReused: a repeat with the key and the text of the first
// post gets the first message back; the key with another text is refused
// (409), since the server keeps no text to answer with.
func TestIdempotencyKeyReused(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	send := func(text string) response {
		body := fmt.Sprintf(`{"room":%q,"user":"alice","message":%q}`, room, text)
		return do(t, "POST", rootSite+"/submit", body, "Content-Type", ctJSON, "Idempotency-Key", "k1")
	}
	first, again := send("once"), send("once")
	if first.status != http.StatusCreated || again.status != http.StatusOK || again.body != repeatOf(first) {
		t.Errorf("repeat: %d %s then %d %s; want 201, then 200 and the same message", first.status, first.body, again.status, again.body)
	}
	errorCase{"reused key", "POST", "/submit", fmt.Sprintf(`{"room":%q,"user":"alice","message":"twice"}`, room),
		[]string{"Content-Type", ctJSON, "Idempotency-Key", "k1"}, 409, "idempotency key", ""}.check(t, rootSite)
}

// TestNewRoomsPerClient: posts to made-up names cannot fill max_rooms: one
// client makes at most max_new_rooms_per_client rooms an hour, then gets 429
// and nothing is made; it can still post to rooms that exist, and another
// client can still make rooms.
func TestNewRoomsPerClient(t *testing.T) {
	startCaddy(t, config{handler: "max_new_rooms_per_client 3"})
	before := metric(t, "caddy_chat_rooms")
	// Addresses of their own, so that a second run (-count=2), which meets
	// the same handler and its counts, starts afresh too.
	host := byte(100 + roomSeq.Add(1)%100)
	greedy, other := newPoster(t, "", host), newPoster(t, "", host+100)
	var made []string
	for i := range 3 {
		room := roomFor(t, fmt.Sprint("new", i))
		if r := greedy.post(t, room, "mallory", "hi", ""); r.status != http.StatusCreated {
			t.Fatalf("new room %d of 3: %d %s", i+1, r.status, r.body)
		}
		made = append(made, room)
	}
	r := greedy.post(t, roomFor(t, "new3"), "mallory", "one too many", "")
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "new rooms") {
		t.Errorf("a 4th new room: %d %s (Retry-After %q), want 429 with Retry-After", r.status, r.body, r.header.Get("Retry-After"))
	}
	if got := metric(t, "caddy_chat_rooms"); got != before+3 {
		t.Errorf("%v rooms made, want 3: the refused post made one", got-before)
	}
	if r := greedy.post(t, made[0], "mallory", "in a room that exists", ""); r.status != http.StatusCreated {
		t.Errorf("a post to an existing room after the limit: %d %s", r.status, r.body)
	}
	if r := other.post(t, roomFor(t, "other"), "alice", "my own room", ""); r.status != http.StatusCreated {
		t.Errorf("another client's new room: %d %s", r.status, r.body)
	}
}

// TestStreamThenPostIsANewRoom: a room made by a stream is made by the first
// post that keeps it, and that post counts against max_new_rooms_per_client:
// with a limit of 1 and max_rooms 25, a client that opens a stream to each
// made-up name before posting to it makes one room, then gets 429; the
// refused rooms go with their streams, and another client can still make a
// room.
func TestStreamThenPostIsANewRoom(t *testing.T) {
	startCaddy(t, config{})
	existing := int(metric(t, "caddy_chat_rooms"))
	startCaddy(t, config{global: fmt.Sprintf("max_rooms %d", existing+25), handler: "max_new_rooms_per_client 1"})
	host := byte(100 + roomSeq.Add(1)%100)
	greedy, other := newPoster(t, "", host), newPoster(t, "", host+100)
	// The poster's client gives up on a response after a while; a stream
	// lasts as long as the test.
	reader := &http.Client{Transport: greedy.client.Transport}
	made := 0
	var streams []*stream
	for i := range 24 {
		room := roomFor(t, fmt.Sprint("streamed", i))
		streams = append(streams, openStreamWith(t, reader, rootSite+"/stream/"+room))
		r := greedy.post(t, room, "mallory", "hi", "")
		switch {
		case r.status == http.StatusCreated:
			made++
		case r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "new rooms"):
			t.Fatalf("post to streamed room %d: %d %s, want 201 or 429 for new rooms", i, r.status, r.body)
		}
	}
	if made != 1 {
		t.Errorf("one client made %d rooms by a stream then a post, want 1", made)
	}
	for _, s := range streams {
		s.close()
	}
	waitFor(t, "the rooms that no post kept to go with their streams", func() bool {
		return int(metric(t, "caddy_chat_rooms")) == existing+made
	})
	if r := other.post(t, roomFor(t, "other"), "alice", "my own room", ""); r.status != http.StatusCreated {
		t.Errorf("another client's new room: %d %s, want 201", r.status, r.body)
	}
}
