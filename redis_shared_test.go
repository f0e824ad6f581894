package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// redisGlobal is the chat app's options for the in-process node on srv.
func redisGlobal(srv *redistest.Server) string {
	return "store redis " + srv.URL() + " {\n\t\t\tprefix it:\n\t\t}"
}

// TestRedisRateLimitAcrossNodes: a client's posts count against rate_limit
// on every node: posts alternated over two nodes, with and without
// Idempotency-Key, are refused with 429 and Retry-After once the limit is
// reached, on both nodes; a retry of a stored message is still answered.
func TestRedisRateLimitAcrossNodes(t *testing.T) {
	const limit = "rate_limit 4 1m"
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisGlobal(srv), handler: limit})
	defer reload(t, config{})
	b, _ := startRedisNode(t, srv.URL(), limit)
	nodes := []string{rootSite, b}
	room := roomFor(t, "rl")
	body := fmt.Sprintf(`{"room":%q,"user":"alice","message":"hi"}`, room)
	keyed := fmt.Sprintf(`{"room":%q,"user":"alice","message":"keyed"}`, room)
	if resp := do(t, "POST", rootSite+"/submit", keyed, "Content-Type", "application/json", "Idempotency-Key", "k1"); resp.status != http.StatusCreated {
		t.Fatalf("keyed post on A: %d %s; want 201 within the limit", resp.status, resp.body)
	}
	for i := range 3 {
		if resp := do(t, "POST", nodes[(i+1)%2]+"/submit", body, "Content-Type", "application/json"); resp.status != http.StatusCreated {
			t.Fatalf("post %d, on node %d: %d %s; want 201 within the limit", i+2, (i+1)%2, resp.status, resp.body)
		}
	}
	for i, node := range nodes {
		for _, key := range []string{"", "k2"} {
			headers := []string{"Content-Type", "application/json"}
			if key != "" {
				headers = append(headers, "Idempotency-Key", key)
			}
			resp := do(t, "POST", node+"/submit", body, headers...)
			retry, _ := strconv.Atoi(resp.header.Get("Retry-After"))
			if resp.status != http.StatusTooManyRequests || retry < 1 || retry > 60 {
				t.Fatalf("post over the limit on node %d, key %q: %d, Retry-After %q; want 429 with 1-60 s", i, key, resp.status, resp.header.Get("Retry-After"))
			}
		}
	}
	// A retry of a stored message is answered, never refused.
	if resp := do(t, "POST", b+"/submit", keyed, "Content-Type", "application/json", "Idempotency-Key", "k1"); resp.status != http.StatusOK {
		t.Fatalf("retry on B at the limit: %d %s; want 200", resp.status, resp.body)
	}
	if got, _ := roomMessages(t, b, room); len(got) != 4 {
		t.Fatalf("%d messages stored, want the 4 within the limit", len(got))
	}
}

// TestRedisKeyedRetryOnAnotherNode: a keyed post retried on a node that has
// not opened its room yet is answered 200 with the stored message, not 429,
// and neither retry counts against rate_limit: the key is looked up across
// the nodes before the limit is taken.
func TestRedisKeyedRetryOnAnotherNode(t *testing.T) {
	const limit = "rate_limit 2 1m"
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisGlobal(srv), handler: limit})
	defer reload(t, config{})
	b, _ := startRedisNode(t, srv.URL(), limit)
	room := roomFor(t, "retry")
	keyed := fmt.Sprintf(`{"room":%q,"user":"alice","message":"keyed"}`, room)
	post := func(node, body, key string) response {
		headers := []string{"Content-Type", "application/json"}
		if key != "" {
			headers = append(headers, "Idempotency-Key", key)
		}
		return do(t, "POST", node+"/submit", body, headers...)
	}
	first := post(rootSite, keyed, "k1")
	if first.status != http.StatusCreated {
		t.Fatalf("keyed post on A: %d %s; want 201", first.status, first.body)
	}
	for i, node := range []string{rootSite, b, b} {
		r := post(node, keyed, "k1")
		if r.status != http.StatusOK || r.json["id"] != first.json["id"] {
			t.Fatalf("retry %d, on %s: %d %s (Retry-After %q); want 200 with id %v", i+1, node, r.status, r.body, r.header.Get("Retry-After"), first.json["id"])
		}
	}
	other := fmt.Sprintf(`{"room":%q,"user":"alice","message":"second"}`, room)
	if r := post(b, other, ""); r.status != http.StatusCreated {
		t.Fatalf("a second post, within the limit of 2 as the retries are not counted: %d %s; want 201", r.status, r.body)
	}
	if r := post(b, other, "k2"); r.status != http.StatusTooManyRequests {
		t.Fatalf("a third post: %d %s; want 429", r.status, r.body)
	}
	if got, _ := roomMessages(t, b, room); len(got) != 2 {
		t.Fatalf("%d messages stored, want 2", len(got))
	}
}

// roomInfo returns the room's entry of GET /rooms on site.
func roomInfo(t *testing.T, site, room string) rooms.RoomInfo {
	t.Helper()
	resp := do(t, "GET", site+"/rooms", "")
	var list struct {
		Rooms []rooms.RoomInfo `json:"rooms"`
	}
	if err := json.Unmarshal([]byte(resp.body), &list); resp.status != http.StatusOK || err != nil {
		t.Fatalf("GET /rooms: %d %s", resp.status, resp.body)
	}
	for _, info := range list.Rooms {
		if info.Name == room {
			return info
		}
	}
	return rooms.RoomInfo{Name: room}
}

// presenceText renders a presence answer as "alice:1 bob:2 anonymous=3".
func presenceText(p rooms.Presence) string {
	var out []string
	for _, u := range p.Users {
		out = append(out, fmt.Sprintf("%s:%d", u.User, u.Streams))
	}
	return strings.Join(append(out, fmt.Sprintf("anonymous=%d", p.Anonymous)), " ")
}

// TestRedisCensusAcrossNodes: /rooms and presence on node A count the
// streams on node B, a presence watcher on A hears B's users come and go
// within 2 s, and once B is killed, its streams and users leave A's
// counts within the census TTL of 5 s. gRPC ListRooms sums as /rooms does.
func TestRedisCensusAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisGlobal(srv), handler: "grpc on"})
	defer reload(t, config{})
	b, process := startRedisNode(t, srv.URL())
	room := roomFor(t, "census")
	postJSON(t, b, room, "alice", "made on B")

	watcher := openStream(t, rootSite+"/stream/"+room+"?presence=1&user=alice")
	openStream(t, rootSite+"/stream/"+room)
	if c, _ := watcher.nextPresence(t); len(c.Joined)+len(c.Left) != 0 {
		t.Fatalf("first presence event on A: %+v, want nobody yet", c)
	}
	if c, _ := watcher.nextPresence(t); strings.Join(c.Joined, ",") != "alice" {
		t.Fatalf("presence event on A after alice's stream: %+v", c)
	}

	bob := openStream(t, b+"/stream/"+room+"?user=bob")
	opened := time.Now()
	openStream(t, b+"/stream/"+room+"?user=carol")
	openStream(t, b+"/stream/"+room)
	c, at := watcher.nextPresence(t)
	if strings.Join(c.Joined, ",") != "bob,carol" || len(c.Left) != 0 || at.Sub(opened) > 2*time.Second {
		t.Fatalf("presence event on A after streams opened on B: %+v after %v; want bob and carol within 2s", c, at.Sub(opened))
	}
	for _, node := range []string{rootSite, b} {
		if got := presenceText(presenceOf(t, node, room)); got != "alice:1 bob:1 carol:1 anonymous=2" {
			t.Fatalf("presence on %s: %s, want alice:1 bob:1 carol:1 anonymous=2", node, got)
		}
		if info := roomInfo(t, node, room); info.Subscribers != 5 || info.Users != 3 || info.LastID == "" {
			t.Fatalf("/rooms on %s: %+v, want 5 subscribers, 3 users and a last id", node, info)
		}
	}
	list, err := connectClient(rootSite).ListRooms(callCtx(t), connect.NewRequest(&chatv1.ListRoomsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list.Msg.GetRooms(), func(r *chatv1.Room) bool { return r.Name == room }); i < 0 || list.Msg.Rooms[i].Subscribers != 5 {
		t.Fatalf("gRPC ListRooms on A: %v, want %s with 5 subscribers", list.Msg.GetRooms(), room)
	}

	bob.close()
	closed := time.Now()
	c, at = watcher.nextPresence(t)
	if len(c.Joined) != 0 || strings.Join(c.Left, ",") != "bob" || at.Sub(closed) > 2*time.Second {
		t.Fatalf("presence event on A after bob's stream on B closed: %+v after %v; want bob left within 2s", c, at.Sub(closed))
	}

	if err := process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, "B's streams to leave A's presence", func() bool {
		return presenceText(presenceOf(t, rootSite, room)) == "alice:1 anonymous=1"
	})
	if gone := time.Since(killed); gone > 7*time.Second {
		t.Fatalf("B's streams left A's presence %v after B was killed, want within 7s", gone)
	}
	if info := roomInfo(t, rootSite, room); info.Subscribers != 2 || info.Users != 1 {
		t.Fatalf("/rooms on A after B was killed: %+v, want 2 subscribers, 1 user", info)
	}
	if c, _ := watcher.nextPresence(t); len(c.Joined) != 0 || strings.Join(c.Left, ",") != "carol" {
		t.Fatalf("presence event on A after B was killed: %+v; want carol left", c)
	}
}
