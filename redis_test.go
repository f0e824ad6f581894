package chat

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// redisNode runs the caddy binary as a second node on the redis store at
// url and returns its site's address.
func redisNode(t *testing.T, url string) string {
	t.Helper()
	site, _ := startRedisNode(t, url)
	return site
}

// startRedisNode is redisNode that also returns the process, for a test
// that kills it. handler holds the chat handler's subdirectives, if any.
func startRedisNode(t *testing.T, url string, handler ...string) (string, *os.Process) {
	t.Helper()
	return startStoreNode(t, redisStore(url, ""), handler...)
}

// redisStore is the store option of the chat app for the redis store at
// url, with the prefix the tests use and more options.
func redisStore(url, more string) string {
	return "store redis " + url + " {\n\t\t\tprefix it:\n\t\t\t" + more + "\n\t\t}"
}

// startStoreNode runs the caddy binary with the chat app's store option
// store and the chat handler's subdirectives handler, and returns its
// site's address and its process.
func startStoreNode(t *testing.T, store string, handler ...string) (string, *os.Process) {
	t.Helper()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tchat {\n\t\t%s\n\t}\n}\n%s {\n\tchat {\n\t\t%s\n\t}\n}\n", admin, store, site, strings.Join(handler, "\n\t\t"))
	process, _ := startBinary(t, t.TempDir(), cfg, site)
	return site, process
}

// TestRedisTwoNodes: the in-process Caddy and the caddy binary share rooms
// through one redis-server. A message posted on one reaches streams on the
// other with the same id; a reader moving between them with its
// Last-Event-ID resumes with no reset; an Idempotency-Key retried on the
// other node stores once; with Redis down, submits answer 503 and open
// streams stay open, and catch up once it is back.
func TestRedisTwoNodes(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: "store redis " + srv.URL() + " {\n\t\t\tprefix it:\n\t\t}"})
	defer reload(t, config{})
	a, b := rootSite, redisNode(t, srv.URL())
	room := roomFor(t, "a")

	first := postJSON(t, a, room, "alice", "one")
	onB := openStream(t, b+"/stream/"+room, "Last-Event-ID", first.ID)
	defer onB.close()
	second := postJSON(t, a, room, "alice", "two")
	third := postJSON(t, b, room, "bob", "three")
	if got, want := onB.messages(t, 2), []rooms.Message{second, third}; ids(got) != ids(want) {
		t.Fatalf("stream on B got\n%s\nwant\n%s", ids(got), ids(want))
	}
	if e, _, _ := rooms.ParseID(first.ID); third.ID != rooms.FormatID(e, 3) {
		t.Fatalf("third message on B has id %s; want the sequence of %s continued", third.ID, first.ID)
	}

	// A reader of A moves to B with the id A gave it.
	moved := openStream(t, b+"/stream/"+room, "Last-Event-ID", first.ID)
	defer moved.close()
	if got := moved.messages(t, 2); ids(got) != ids([]rooms.Message{second, third}) {
		t.Fatalf("resumed on B after %s: %s", first.ID, ids(got))
	}
	if got, reset := roomMessages(t, b, room); reset || len(got) != 3 {
		t.Fatalf("/messages on B: %d messages, reset %v; want 3, no reset", len(got), reset)
	}

	body := fmt.Sprintf(`{"room":%q,"user":"alice","message":"retried"}`, room)
	stored := do(t, "POST", a+"/submit", body, "Content-Type", "application/json", "Idempotency-Key", "k1")
	retried := do(t, "POST", b+"/submit", body, "Content-Type", "application/json", "Idempotency-Key", "k1")
	if stored.status != http.StatusCreated || retried.status != http.StatusOK || retried.json["id"] != stored.json["id"] {
		t.Fatalf("retry on B: %d %v then %d %v; want 201 then 200 with the same id", stored.status, stored.json["id"], retried.status, retried.json["id"])
	}
	if got := onB.messages(t, 1); got[0].ID != stored.json["id"] {
		t.Fatalf("stream on B got %s, want %v once", got[0].ID, stored.json["id"])
	}

	srv.Stop()
	for _, node := range []string{a, b} {
		resp := do(t, "POST", node+"/submit", fmt.Sprintf(`{"room":%q,"user":"alice","message":"lost"}`, room), "Content-Type", "application/json")
		if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
			t.Fatalf("submit on %s with Redis down: %d %s, Retry-After %q; want 503 with Retry-After", node, resp.status, resp.body, resp.header.Get("Retry-After"))
		}
	}
	onB.quiet(t, 300*time.Millisecond)

	srv.Restart(t)
	var back rooms.Message
	waitFor(t, "submits to succeed once Redis is back", func() bool {
		var err error
		back, err = tryPostJSON(a, room, "alice", "back")
		return err == nil
	})
	if got := onB.messages(t, 1); got[0].ID != back.ID || got[0].Message != "back" {
		t.Fatalf("stream on B after Redis came back got %s %q, want %s", got[0].ID, got[0].Message, back.ID)
	}
	if e, _, _ := rooms.ParseID(first.ID); back.ID != rooms.FormatID(e, 5) {
		t.Fatalf("after Redis came back the id is %s, want the sequence of %s continued at 5", back.ID, first.ID)
	}
}

// TestRedisDownAtStart: a node whose Redis does not answer refuses to start,
// saying which server it tried, rather than serving 503s.
func TestRedisDownAtStart(t *testing.T) {
	url := "redis://127.0.0.1:" + freePort() + "/0"
	refusesToLoad(t, config{global: "store redis " + url}, "a config whose Redis is down", "store redis 127.0.0.1:")
}

// TestRedisConcurrentPublishers: publishers on both nodes at once; every
// stream on every node receives the same ids, in order, each exactly once,
// and every acknowledged id is among them.
func TestRedisConcurrentPublishers(t *testing.T) {
	const perNode, publishers = 100, 4
	srv := redistest.Start(t)
	startCaddy(t, config{global: "store redis " + srv.URL() + " {\n\t\t\tprefix it:\n\t\t}"})
	defer reload(t, config{})
	nodes := []string{rootSite, redisNode(t, srv.URL())}
	room := roomFor(t, "a")
	// The room's first message, so that both streams resume from it.
	first := postJSON(t, nodes[0], room, "alice", "first")
	var streams []*stream
	for _, node := range nodes {
		for range 2 {
			s := openStream(t, node+"/stream/"+room, "Last-Event-ID", first.ID)
			defer s.close()
			streams = append(streams, s)
		}
	}
	acked := make(chan string, len(nodes)*perNode)
	errs := make(chan error, len(nodes)*publishers)
	var wg sync.WaitGroup
	for n, node := range nodes {
		for p := range publishers {
			wg.Go(func() {
				for i := p; i < perNode; i += publishers {
					m, err := tryPostJSON(node, room, fmt.Sprint("u", n), fmt.Sprint(n, "-", i))
					if err != nil {
						errs <- err
						return
					}
					acked <- m.ID
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	close(acked)
	for err := range errs {
		t.Fatal(err)
	}
	epoch, _, _ := rooms.ParseID(first.ID)
	want := make([]string, 0, len(nodes)*perNode)
	for seq := 2; seq <= len(nodes)*perNode+1; seq++ {
		want = append(want, rooms.FormatID(epoch, uint64(seq)))
	}
	for id := range acked {
		if _, seq, _ := rooms.ParseID(id); !strings.HasPrefix(id, epoch+"-") || seq < 2 || seq > uint64(len(want)+1) {
			t.Fatalf("acknowledged id %s outside %s..%s", id, want[0], want[len(want)-1])
		}
	}
	for i, s := range streams {
		got := s.messages(t, len(want))
		for j, m := range got {
			if m.ID != want[j] {
				t.Fatalf("stream %d on node %d: message %d is %s, want %s", i, i/2, j, m.ID, want[j])
			}
		}
	}
}

// TestRedisNodeKilled: a node is killed with SIGKILL while its client
// follows a room and messages are posted on the other node; the client
// reconnects to the other node with its last id and receives every message
// that got a 201, once, with no reset.
func TestRedisNodeKilled(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: "store redis " + srv.URL() + " {\n\t\t\tprefix it:\n\t\t}"})
	defer reload(t, config{})
	b, process := startRedisNode(t, srv.URL())
	room := roomFor(t, "a")
	first := postJSON(t, rootSite, room, "alice", "first")
	onB := openStream(t, b+"/stream/"+room, "Last-Event-ID", first.ID)
	defer onB.close()
	var sent []rooms.Message
	for i := range 10 {
		sent = append(sent, postJSON(t, rootSite, room, "alice", fmt.Sprint("before ", i)))
	}
	got := onB.messages(t, 5)
	if err := process.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		sent = append(sent, postJSON(t, rootSite, room, "alice", fmt.Sprint("after ", i)))
	}
	moved := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", got[len(got)-1].ID)
	defer moved.close()
	rest := moved.messages(t, len(sent)-len(got))
	if all := append(got, rest...); ids(all) != ids(sent) {
		t.Fatalf("the client moved from the killed node got\n%s\nwant\n%s", ids(all), ids(sent))
	}
	moved.quiet(t, 200*time.Millisecond)
}
