package chat

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// TestRedisCluster: two nodes on a Redis Cluster of three masters, the
// in-process Caddy seeded with all three, the binary with one. In rooms
// whose keys fall on different masters, a message posted on either node
// reaches a stream on the other in order, and a reader moving between the
// nodes with its Last-Event-ID resumes with no reset. A delete on one node
// ends the room's streams on the other.
func TestRedisCluster(t *testing.T) {
	start := time.Now()
	nodes := redistest.StartCluster(t, 3)
	t.Logf("cluster of 3 ready in %v", time.Since(start))
	startCaddy(t, config{global: redisStore("redis://"+nodes[0].Addr+"/0", "cluster "+nodes[1].Addr+" "+nodes[2].Addr), handler: "allow_delete"})
	defer reload(t, config{})
	a := rootSite
	b, _ := startStoreNode(t, redisStore("redis://"+nodes[2].Addr+"/0", "cluster"))
	for i := range 3 {
		room := roomFor(t, fmt.Sprint(i))
		first := postJSON(t, a, room, "alice", "one")
		onB := openStream(t, b+"/stream/"+room, "Last-Event-ID", first.ID)
		second := postJSON(t, a, room, "alice", "two")
		third := postJSON(t, b, room, "bob", "three")
		if got, want := onB.messages(t, 2), []rooms.Message{second, third}; ids(got) != ids(want) {
			t.Fatalf("room %s: stream on B got\n%s\nwant\n%s", room, ids(got), ids(want))
		}
		onB.close()
		moved := openStream(t, a+"/stream/"+room, "Last-Event-ID", first.ID)
		if got := moved.messages(t, 2); ids(got) != ids([]rooms.Message{second, third}) {
			t.Fatalf("room %s: resumed on A after %s: %s", room, first.ID, ids(got))
		}
		moved.close()
	}
	room := roomFor(t, "deleted")
	postJSON(t, a, room, "alice", "soon gone")
	onB := openStream(t, b+"/stream/"+room)
	defer onB.close()
	if resp := do(t, "DELETE", a+"/room/"+room, ""); resp.status != http.StatusNoContent {
		t.Fatalf("DELETE on A: %d %s", resp.status, resp.body)
	}
	onB.end(t)
	t.Logf("whole test %v", time.Since(start))
}

// TestRedisSentinel: a node finds its Redis through a Sentinel; messages
// posted there are stored and streamed, and the node names the Sentinel it
// asked when it starts.
func TestRedisSentinel(t *testing.T) {
	start := time.Now()
	s := redistest.StartSentinel(t)
	t.Logf("master and Sentinel ready in %v", time.Since(start))
	startCaddy(t, config{global: redisStore("redis://"+s.Addr+"/0", "sentinel "+s.MasterName)})
	defer reload(t, config{})
	room := roomFor(t, "a")
	first := postJSON(t, rootSite, room, "alice", "one")
	stream := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", first.ID)
	defer stream.close()
	second := postJSON(t, rootSite, room, "alice", "two")
	if got := stream.messages(t, 1); got[0].ID != second.ID {
		t.Fatalf("stream got %s, want %s", got[0].ID, second.ID)
	}
	if got, _ := roomMessages(t, rootSite, room); ids(got) != ids([]rooms.Message{first, second}) {
		t.Fatalf("history through the Sentinel: %s", ids(got))
	}
	t.Logf("whole test %v", time.Since(start))
}

// TestRedisSentinelUnknownMaster: a node whose Sentinel knows no such master
// refuses to start, naming the Sentinel it asked.
func TestRedisSentinelUnknownMaster(t *testing.T) {
	s := redistest.StartSentinel(t)
	refusesToLoad(t, config{global: redisStore("redis://"+s.Addr+"/0", "sentinel nosuchmaster")},
		"a config whose Sentinel knows no such master", "sentinel nosuchmaster")
}

// TestRedisHanging: Redis stopped with SIGSTOP accepts connections and
// answers nothing. A stream to an open room keeps its heartbeats, submits
// answer 503 with Retry-After within the store's timeout, /rooms and the
// pages answer; once Redis continues, the stream receives the next
// message.
func TestRedisHanging(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisStore(srv.URL(), "") + "\n\t\theartbeat 200ms"})
	defer reload(t, config{})
	room := roomFor(t, "a")
	first := postJSON(t, rootSite, room, "alice", "one")
	stream := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", first.ID)
	defer stream.close()
	raw := getStream(t, rootSite+"/stream/"+room, "Last-Event-ID", first.ID)

	srv.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume(t)
		}
	}()
	body := fmt.Sprintf(`{"room":%q,"user":"alice","message":"maybe"}`, room)
	began := time.Now()
	resp := do(t, "POST", rootSite+"/submit", body, "Content-Type", "application/json")
	if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
		t.Fatalf("submit while Redis hangs: %d %s, Retry-After %q; want 503 with Retry-After", resp.status, resp.body, resp.header.Get("Retry-After"))
	}
	t.Logf("submit answered 503 after %v", time.Since(began))
	began = time.Now()
	for _, path := range []string{"/rooms", "/"} {
		if resp := do(t, "GET", rootSite+path, ""); resp.status != http.StatusOK {
			t.Fatalf("GET %s while Redis hangs: %d %s", path, resp.status, resp.body)
		}
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("/rooms and / took %v while Redis hangs", took)
	}
	// The stream read raw, for its heartbeat comments.
	pings, buf := 0, make([]byte, 4096)
	for deadline := time.Now().Add(wait); pings < 2 && time.Now().Before(deadline); {
		n, err := raw.Body.Read(buf)
		if err != nil {
			t.Fatalf("stream while Redis hangs: %v", err)
		}
		pings += strings.Count(string(buf[:n]), ": ping\n")
	}
	if pings < 2 {
		t.Fatalf("%d heartbeats on an open stream while Redis hangs, want 2", pings)
	}

	srv.Resume(t)
	resumed = true
	var back rooms.Message
	waitFor(t, "submits to succeed once Redis continues", func() bool {
		var err error
		back, err = tryPostJSON(rootSite, room, "alice", "back")
		return err == nil
	})
	// The refused submits may yet have been stored, when Redis read them
	// on continuing: they come before, in order.
	_, last, _ := rooms.ParseID(back.ID)
	got := stream.messages(t, int(last)-1)
	epoch, _, _ := rooms.ParseID(first.ID)
	for i, m := range got {
		if m.ID != rooms.FormatID(epoch, uint64(i+2)) {
			t.Fatalf("stream after Redis continued: %s; want the ids after %s in order up to %s", ids(got), first.ID, back.ID)
		}
	}
}

// TestRedisClusterNeedsDatabase0: a cluster has one database; a URL that
// names another is refused before any connection is tried.
func TestRedisClusterNeedsDatabase0(t *testing.T) {
	refusesToLoad(t, config{global: redisStore("redis://127.0.0.1:"+freePort()+"/2", "cluster")},
		"a cluster on database 2", "a cluster has only database 0")
}

// TestRedisHangingRateLimit: with rate_limit, a submit's first call to Redis
// is its count, which must be bounded like the store's own calls, even when
// the URL gives the client a longer read timeout: a hanging Redis answers
// 503 after 2 seconds, not after the client gives up.
func TestRedisHangingRateLimit(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisStore(srv.URL()+"?read_timeout=30s", ""), handler: "rate_limit 100 1m"})
	defer reload(t, config{})
	room := roomFor(t, "a")
	postJSON(t, rootSite, room, "alice", "one")

	srv.Pause(t)
	defer srv.Resume(t)
	body := fmt.Sprintf(`{"room":%q,"user":"alice","message":"maybe"}`, room)
	began := time.Now()
	resp := do(t, "POST", rootSite+"/submit", body, "Content-Type", "application/json")
	took := time.Since(began)
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("submit while Redis hangs: %d %s; want 503", resp.status, resp.body)
	}
	// 2 s, with room for a loaded machine; the client's own timeout is 30 s.
	if took > 10*time.Second {
		t.Fatalf("submit while Redis hangs answered after %v, want about 2s", took)
	}
}

// TestRedisIdleTimeoutReload: a reload that changes idle_timeout, and keeps
// the store redis line and so the connection, changes when Redis expires a
// room, as it changes the node's own sweep.
func TestRedisIdleTimeoutReload(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisStore(srv.URL(), "") + "\n\t\tidle_timeout 1h"})
	defer reload(t, config{})
	room := roomFor(t, "a")
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	ttl := func() time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		d, err := raw.PTTL(ctx, "it:{"+room+"}:meta").Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	postJSON(t, rootSite, room, "alice", "one")
	if d := ttl(); d < 50*time.Minute {
		t.Fatalf("room expires in %v under idle_timeout 1h", d)
	}
	reload(t, config{global: redisStore(srv.URL(), "") + "\n\t\tidle_timeout 1m"})
	postJSON(t, rootSite, room, "alice", "two")
	if d := ttl(); d <= 0 || d > time.Minute {
		t.Fatalf("room expires in %v after a reload to idle_timeout 1m", d)
	}
}
