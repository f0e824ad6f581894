package chat

// A config's life around its streams: reloads and stops end them promptly,
// under load too, and leave nothing behind; a slow client never holds up
// the others.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// TestReloadKeepsHistory: a reload ends open streams at once instead of
// waiting on them, and keeps every room's history and id sequence, so a
// client that resumes with its last id misses nothing.
func TestReloadKeepsHistory(t *testing.T) {
	before := config{global: "history 100\n heartbeat 15s", handler: "max_message_size 1KiB"}
	after := config{global: "history 200\n heartbeat 20s", handler: "max_message_size 2KiB"}
	startCaddy(t, before)
	room := roomFor(t, "a")
	s := openStream(t, rootSite+"/stream/"+room)
	var posted []rooms.Message
	for i := range 3 {
		posted = append(posted, postJSON(t, rootSite, room, "alice", fmt.Sprint(i)))
	}
	seen := s.messages(t, 3)

	took := reload(t, after)
	if took > 3*time.Second {
		t.Errorf("reload took %v with a stream open", took)
	}
	s.endWithin(t, 2*time.Second) // the old config's stream ends at once

	posted = append(posted, postJSON(t, rootSite, room, "alice", "after reload"))
	epoch0, _, _ := rooms.ParseID(posted[0].ID)
	epoch3, seq3, _ := rooms.ParseID(posted[3].ID)
	if epoch3 != epoch0 || seq3 != 4 {
		t.Errorf("id after reload %q, want the same epoch as %q and sequence 4", posted[3].ID, posted[0].ID)
	}
	back := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", seen[2].ID)
	if got := back.messages(t, 1); got[0].ID != posted[3].ID {
		t.Errorf("resumed stream got %q, want only the message posted after the reload", got[0].Message)
	}
	resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "")
	if resp.status != http.StatusOK || len(resp.json["messages"].([]any)) != 4 {
		t.Errorf("history after reload: %d %s, want all 4 messages", resp.status, resp.body)
	}
	// The new handler config is in force.
	big := do(t, "POST", rootSite+"/submit", fmt.Sprintf(`{"room":%q,"message":%q}`, room, strings.Repeat("x", 1500)), "Content-Type", "application/json")
	if big.status != http.StatusCreated {
		t.Errorf("1500-byte message after raising the limit to 2KiB: %d %s", big.status, big.body)
	}
}

// TestStreamsLeaveNoGoroutine: streams that end, whether the client leaves,
// the room is deleted or bad requests are refused, leave no goroutine behind
// in Caddy, the handler or the rooms.
func TestStreamsLeaveNoGoroutine(t *testing.T) {
	startCaddy(t, config{handler: "allow_delete"})
	room, doomed := roomFor(t, "a"), roomFor(t, "b")
	// Warm up what Caddy starts lazily, then take the baseline.
	warm := openStream(t, rootSite+"/stream/"+room)
	postJSON(t, rootSite, room, "alice", "warm up")
	warm.messages(t, 1)
	warm.close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	client.CloseIdleConnections()
	baseline := goleak.IgnoreCurrent()

	var streams []*stream
	for i := range 50 {
		target := room
		if i%2 == 0 {
			target = doomed
		}
		streams = append(streams, openStream(t, rootSite+"/stream/"+target))
	}
	postJSON(t, rootSite, room, "alice", "hello")
	do(t, "DELETE", rootSite+"/room/"+doomed, "")
	for i, s := range streams {
		if i%2 == 0 {
			s.end(t)
		} else {
			s.messages(t, 1)
		}
		s.close()
	}
	for i := range 20 {
		do(t, "GET", rootSite+fmt.Sprintf("/stream/bad%%2F%d", i), "")
		do(t, "POST", rootSite+"/submit", "{", "Content-Type", ctJSON)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	client.CloseIdleConnections()
	goleak.VerifyNone(t, baseline)
}

// TestSlowClient: in a room of 100 streams, one stops reading and its TCP
// window fills. The other 99 receive every message; the stalled one is
// evicted once its queue is full, and when it comes back with its last id it
// receives every message it missed, once, in order.
func TestSlowClient(t *testing.T) {
	const (
		readers  = 99
		messages = 800
		size     = 8 << 10
	)
	startCaddy(t, config{global: "history 2000\n buffer 16", handler: "max_message_size 16KiB"})
	room := roomFor(t, "a")
	evictionsBefore := metric(t, "caddy_chat_evictions_total")

	// The stalled client: a raw connection with a small receive buffer that
	// reads the first message and then nothing more.
	conn, err := net.Dial("tcp", strings.TrimPrefix(rootSite, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /stream/%s HTTP/1.1\r\nHost: localhost\r\n\r\n", room)
	stalled := bufio.NewReader(conn)
	if status, _ := stalled.ReadString('\n'); !strings.Contains(status, " 200 ") {
		t.Fatalf("stalled stream: %q", status)
	}

	streams := make([]*stream, readers)
	for i := range streams {
		streams[i] = openStream(t, rootSite+"/stream/"+room)
	}
	body := strings.Repeat("x", size)
	first := postJSON(t, rootSite, room, "alice", body)
	conn.SetReadDeadline(time.Now().Add(wait))
	for {
		line, err := stalled.ReadString('\n')
		if err != nil {
			t.Fatalf("stalled stream before stalling: %v", err)
		}
		if line == "id: "+first.ID+"\n" {
			break
		}
	}
	// From here on, the stalled client reads nothing.

	posted := []rooms.Message{first}
	for i := 1; i < messages; i++ {
		posted = append(posted, postJSON(t, rootSite, room, "alice", fmt.Sprintf("%d %s", i, body)))
	}
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() {
			got, err := s.tryEventIDs(messages)
			if err != nil {
				t.Errorf("reader %d: %v", i, err)
			} else if got != ids(posted) {
				t.Errorf("reader %d missed or reordered messages", i)
			}
		})
	}
	wg.Wait()
	if got := metric(t, "caddy_chat_evictions_total") - evictionsBefore; got != 1 {
		t.Errorf("%v evictions, want exactly the stalled stream", got)
	}

	// What it missed is over the replay cap: it comes in pieces, each stream
	// ending after its own, as EventSource follows them.
	if got, _ := resume(t, http.DefaultTransport, rootSite+"/stream/"+room, first.ID, messages-1); got != ids(posted[1:]) {
		t.Error("the evicted client did not get exactly what it missed, in order")
	}
}

// eventSource follows a room the way a browser's EventSource does: when the
// stream ends it reconnects with the last id it saw, until stopped.
type eventSource struct {
	url    string
	mu     sync.Mutex
	got    []rooms.Message
	resets int
	stop   chan struct{}
	done   chan struct{}
}

func newEventSource(url string) *eventSource {
	es := &eventSource{url: url, stop: make(chan struct{}), done: make(chan struct{})}
	go es.run()
	return es
}

func (es *eventSource) run() {
	defer close(es.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-es.stop; cancel() }()
	lastID := ""
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", es.url, nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			for ev := range readEvents(resp.Body) {
				es.mu.Lock()
				switch ev.Name {
				case "message":
					var m rooms.Message
					if json.Unmarshal([]byte(ev.Data), &m) == nil {
						es.got = append(es.got, m)
					}
					lastID = ev.ID
				case "reset":
					es.resets++
				}
				es.mu.Unlock()
			}
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond) // the retry delay, shortened
	}
}

// count returns how many messages have arrived.
func (es *eventSource) count() int {
	es.mu.Lock()
	defer es.mu.Unlock()
	return len(es.got)
}

func (es *eventSource) close() []rooms.Message {
	close(es.stop)
	<-es.done
	return es.got
}

// TestReloadsUnderLoad: while messages flow into 3 rooms of 50 subscribers,
// Caddy reloads 10 times with real config changes. Every subscriber that
// resumes as EventSource does ends with every message exactly once, in
// order, and no reload waits on the open streams.
func TestReloadsUnderLoad(t *testing.T) {
	const (
		roomCount   = 3
		subscribers = 50
		reloads     = 10
	)
	cfgs := func(i int) config {
		return config{
			global:  fmt.Sprintf("history 5000\n heartbeat %ds\n buffer %d", 10+i, 256+i),
			handler: fmt.Sprintf("max_message_size %dKiB", 4+i),
		}
	}
	startCaddy(t, cfgs(0))
	names := make([]string, roomCount)
	var sources [roomCount][]*eventSource
	for r := range names {
		names[r] = roomFor(t, fmt.Sprint(r))
		postJSON(t, rootSite, names[r], "setup", "first") // so subscribers can resume from an id
		for range subscribers {
			sources[r] = append(sources[r], newEventSource(rootSite+"/stream/"+names[r]+"?history=1"))
		}
	}
	waitFor(t, "every subscriber to receive the first message", func() bool {
		for r := range names {
			for _, es := range sources[r] {
				if es.count() < 1 {
					return false
				}
			}
		}
		return true
	})

	// Publishers retry a failed submit with the same Idempotency-Key, as a
	// client must when a reload cuts its connection.
	stop := make(chan struct{})
	published := make([][]string, roomCount)
	var pubs sync.WaitGroup
	for r := range names {
		pubs.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("%s-%d", names[r], i)
				body := fmt.Sprintf(`{"room":%q,"user":"pub","message":"%d"}`, names[r], i)
				for attempt := 0; ; attempt++ {
					req, _ := http.NewRequest("POST", rootSite+"/submit", strings.NewReader(body))
					req.Header.Set("Content-Type", ctJSON)
					req.Header.Set("Idempotency-Key", key)
					resp, err := client.Do(req)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
							published[r] = append(published[r], fmt.Sprint(i))
							break
						}
					}
					if attempt > 50 {
						t.Errorf("submit %s kept failing: %v", key, err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	var slowest time.Duration
	for i := 1; i <= reloads; i++ {
		time.Sleep(150 * time.Millisecond)
		slowest = max(slowest, reload(t, cfgs(i)))
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	pubs.Wait()
	t.Logf("%d reloads, slowest %v; published %d, %d, %d", reloads, slowest, len(published[0]), len(published[1]), len(published[2]))
	if slowest > 3*time.Second {
		t.Errorf("a reload took %v: it waited on open streams", slowest)
	}

	for r := range names {
		want := append([]string{"first"}, published[r]...)
		waitFor(t, "subscribers to catch up", func() bool {
			for _, es := range sources[r] {
				if es.count() < len(want) {
					return false
				}
			}
			return true
		})
		for i, es := range sources[r] {
			got := es.close()
			if texts(got) != strings.Join(want, ",") {
				t.Errorf("room %d subscriber %d: got %d messages, want %d, exactly once and in order", r, i, len(got), len(want))
			}
			if es.resets != 0 {
				t.Errorf("room %d subscriber %d saw %d resets", r, i, es.resets)
			}
		}
	}
}
