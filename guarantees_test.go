package chat

// Promises of the docs (docs/guarantees.md, docs/http-api.md,
// docs/operations.md) that no other test holds; each test names the one it
// keeps.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// resetOldest reads the next event of s, which must be a reset, and returns
// its oldest id.
func resetOldest(t *testing.T, s *stream) string {
	t.Helper()
	ev := s.next(t)
	var data map[string]string
	if ev.Name != "reset" || json.Unmarshal([]byte(ev.Data), &data) != nil {
		t.Fatalf("event %q %s, want a reset", ev.Name, ev.Data)
	}
	oldest, ok := data["oldest"]
	if !ok {
		t.Fatalf("reset %s names no oldest id", ev.Data)
	}
	return oldest
}

// listedRoom returns the entry of GET /rooms for name, and whether there is
// one.
func listedRoom(t *testing.T, base, name string) (entry map[string]any, ok bool) {
	t.Helper()
	resp := do(t, "GET", base+"/rooms", "")
	list, isList := resp.json["rooms"].([]any)
	if resp.status != http.StatusOK || !isList {
		t.Fatalf("GET /rooms: %d %s", resp.status, resp.body)
	}
	for _, r := range list {
		if entry, _ := r.(map[string]any); entry["name"] == name {
			return entry, true
		}
	}
	return nil, false
}

// TestDeleteUnknownRoom: DELETE /room/{room} answers 404 with a JSON error
// for a room that does not exist, and creates nothing; without allow_delete
// it answers 403 before the room is looked up, existing or not.
func TestDeleteUnknownRoom(t *testing.T) {
	existing, unknown := roomFor(t, "existing"), roomFor(t, "unknown")
	for _, tt := range []struct {
		handler string
		errorCase
	}{
		{"", errorCase{"unknown, not allowed", "DELETE", "/room/" + unknown, "", nil, 403, "not allowed", ""}},
		{"", errorCase{"existing, not allowed", "DELETE", "/room/" + existing, "", nil, 403, "not allowed", ""}},
		{"allow_delete", errorCase{"unknown", "DELETE", "/room/" + unknown, "", nil, 404, "no such room", ""}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			startCaddy(t, config{handler: tt.handler})
			postJSON(t, rootSite, existing, "alice", "stays")
			tt.check(t, rootSite)
			tt.check(t, chatBase)
			if _, ok := listedRoom(t, rootSite, unknown); ok {
				t.Errorf("DELETE of %s created it", unknown)
			}
			if _, ok := listedRoom(t, rootSite, existing); !ok {
				t.Errorf("a refused DELETE dropped %s", existing)
			}
		})
	}
}

// TestIdentityEmpty: identity {http.auth.user.id} on a route without auth
// resolves empty, so the user given in the request is the author, and
// "anonymous" when it gives none.
func TestIdentityEmpty(t *testing.T) {
	startCaddy(t, config{handler: "identity {http.auth.user.id}"})
	room := roomFor(t, "a")
	for claimed, want := range map[string]string{"carol": "carol", "": "anonymous"} {
		if m := postJSON(t, rootSite, room, claimed, "hi"); m.User != want {
			t.Errorf("posting as %q without auth: author %q, want %q", claimed, m.User, want)
		}
	}
	if r := do(t, "POST", chatBase+"/room/"+room, "user=dave&message=hi", "Content-Type", ctForm); r.status != http.StatusCreated || r.json["user"] != "dave" {
		t.Errorf("form post as dave without auth: %d %s, want 201 by dave", r.status, r.body)
	}
}

// TestDefaults holds the defaults docs/operations.md gives: max_body_size is six
// times the 4KiB max_message_size plus 4KiB, GET /rooms/{room}/messages
// returns the newest 50, and refusals for capacity (max_rooms,
// max_subscribers, max_streams_per_client) say Retry-After: 5.
func TestDefaults(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	// body is a valid submit; given a size, padded to it with JSON
	// whitespace.
	body := func(message string, size int) string {
		s := fmt.Sprintf(`{"room":%q,"message":%q}`, room, message)
		if size == 0 {
			return s
		}
		return s[:len(s)-1] + strings.Repeat(" ", size-len(s)) + "}"
	}
	const maxMessage, maxBody = 4 << 10, 6*(4<<10) + 4<<10
	for _, tt := range []struct {
		name   string
		body   string
		status int
	}{
		{"largest message", body(strings.Repeat("m", maxMessage), 0), http.StatusCreated},
		{"message a byte over", body(strings.Repeat("m", maxMessage+1), 0), http.StatusRequestEntityTooLarge},
		{"largest body", body("fits", maxBody), http.StatusCreated},
		{"body a byte over", body("fits", maxBody+1), http.StatusRequestEntityTooLarge},
	} {
		if r := do(t, "POST", rootSite+"/submit", tt.body, "Content-Type", ctJSON); r.status != tt.status {
			t.Errorf("%s (%d bytes): %d %s, want %d", tt.name, len(tt.body), r.status, r.body, tt.status)
		}
	}

	many := roomFor(t, "many")
	var posted []rooms.Message
	for i := range 60 {
		posted = append(posted, postJSON(t, rootSite, many, "alice", fmt.Sprint(i)))
	}
	var got struct{ Messages []rooms.Message }
	resp := do(t, "GET", rootSite+"/rooms/"+many+"/messages", "")
	if err := json.Unmarshal([]byte(resp.body), &got); err != nil || ids(got.Messages) != ids(posted[10:]) {
		t.Errorf("messages without limit: %d %s, want the newest 50 (%s to %s)", resp.status, texts(got.Messages), posted[10].Message, posted[59].Message)
	}

	// Past a capacity limit, a new stream is told to come back in 5s.
	for _, tt := range []struct {
		global, handler string
		room            string
		status          int
	}{
		{"max_subscribers 1", "", room, http.StatusServiceUnavailable},
		{"", "max_streams_per_client 1", room, http.StatusTooManyRequests},
		{"max_rooms %d", "", roomFor(t, "over"), http.StatusServiceUnavailable},
	} {
		waitFor(t, "earlier streams to end", func() bool { return metric(t, "caddy_chat_subscribers") == 0 })
		if strings.Contains(tt.global, "%d") { // as many rooms as there are now
			tt.global = fmt.Sprintf(tt.global, int(metric(t, "caddy_chat_rooms")))
		}
		startCaddy(t, config{global: tt.global, handler: tt.handler})
		s := openStream(t, rootSite+"/stream/"+room)
		r := do(t, "GET", rootSite+"/stream/"+tt.room, "")
		if r.status != tt.status || r.header.Get("Retry-After") != "5" {
			t.Errorf("a stream past %s%s: %d Retry-After %q, want %d with Retry-After 5", tt.global, tt.handler, r.status, r.header.Get("Retry-After"), tt.status)
		}
		s.close()
	}
}

// TestMessagesForeignEpoch: GET /rooms/{room}/messages?after= an id of
// another epoch, even one whose sequence number this room has, answers
// "reset":true with the oldest kept id, starting there.
func TestMessagesForeignEpoch(t *testing.T) {
	startCaddy(t, config{global: "history 3"})
	room, other := roomFor(t, "a"), roomFor(t, "other")
	var all []rooms.Message
	for i := range 5 {
		all = append(all, postJSON(t, rootSite, room, "alice", fmt.Sprint(i)))
	}
	var foreign []rooms.Message
	for i := range 4 {
		foreign = append(foreign, postJSON(t, rootSite, other, "bob", fmt.Sprint(i)))
	}
	epoch, _, _ := rooms.ParseID(all[0].ID)
	for name, after := range map[string]string{
		"another room's id":            foreign[3].ID, // sequence 4: kept in room
		"an id of no room":             "zzzz-3",
		"another epoch, same sequence": rooms.FormatID(epoch+"x", 4),
		"a sequence too far":           rooms.FormatID(epoch, 9),
	} {
		var got struct {
			Messages []rooms.Message
			Reset    bool
			Oldest   *string
		}
		resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages?after="+after, "")
		if err := json.Unmarshal([]byte(resp.body), &got); err != nil || !got.Reset || got.Oldest == nil || *got.Oldest != all[2].ID || ids(got.Messages) != ids(all[2:]) {
			t.Errorf("after %s (%s): %d %s, want reset with oldest %s and messages 2,3,4", name, after, resp.status, resp.body, all[2].ID)
		}
	}
}

// TestHistoryZero: with history 0 nothing is kept. A resume that missed
// messages gets a reset with oldest "" and no replay, then live messages;
// the messages API answers an empty list that starts the room's history,
// with reset after an id it cannot continue from.
func TestHistoryZero(t *testing.T) {
	startCaddy(t, config{global: "history 0"})
	room := roomFor(t, "a")
	first := postJSON(t, rootSite, room, "alice", "1")
	postJSON(t, rootSite, room, "alice", "2")

	resumed := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", first.ID)
	if oldest := resetOldest(t, resumed); oldest != "" {
		t.Errorf("reset names oldest %q with nothing kept, want \"\"", oldest)
	}
	fresh := openStream(t, rootSite+"/stream/"+room+"?history=5")
	live := postJSON(t, rootSite, room, "alice", "live")
	for name, s := range map[string]*stream{"resumed": resumed, "fresh with history=5": fresh} {
		if got := s.messages(t, 1); got[0].ID != live.ID {
			t.Errorf("%s stream: first message %q, want only the live one", name, got[0].Message)
		}
	}

	for query, want := range map[string]string{
		"":                   `{"messages":[],"start":true}`,
		"?after=" + first.ID: `{"messages":[],"reset":true,"oldest":"","start":true}`,
	} {
		if r := do(t, "GET", rootSite+"/rooms/"+room+"/messages"+query, ""); r.status != http.StatusOK || strings.TrimSpace(r.body) != want {
			t.Errorf("messages%s: %d %s, want %s", query, r.status, r.body, want)
		}
	}
}

// TestIdleSweep: a room with no stream and no message for idle_timeout is
// dropped with its history: gone from GET /rooms, its history 404, an old id
// reset. A room with an open stream stays, and goes once the stream ends. A
// reload that shortens idle_timeout applies at once.
func TestIdleSweep(t *testing.T) {
	startCaddy(t, config{}) // the default idle_timeout, 1h
	idle, followed := roomFor(t, "idle"), roomFor(t, "followed")
	reload(t, config{global: "idle_timeout 300ms"})
	old := postJSON(t, rootSite, idle, "alice", "soon gone")
	postJSON(t, rootSite, followed, "alice", "stays")
	s := openStream(t, rootSite+"/stream/"+followed)

	start := time.Now()
	waitFor(t, "the idle room to be dropped", func() bool {
		_, ok := listedRoom(t, rootSite, idle)
		return !ok
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the idle room was dropped after %v, want about 300ms", took)
	}
	s.quiet(t, 600*time.Millisecond) // twice the timeout: the stream is not ended
	if entry, ok := listedRoom(t, rootSite, followed); !ok || entry["subscribers"] != 1.0 {
		t.Errorf("the room with a stream open: listed %v (%v), want it with 1 subscriber", ok, entry)
	}
	if r := do(t, "GET", rootSite+"/rooms/"+idle+"/messages", ""); r.status != http.StatusNotFound || r.json["error"] != "no such room" {
		t.Errorf("history of the dropped room: %d %s, want 404 no such room", r.status, r.body)
	}
	back := openStream(t, rootSite+"/stream/"+idle, "Last-Event-ID", old.ID)
	if oldest := resetOldest(t, back); oldest != "" {
		t.Errorf("resume in the room made anew: reset with oldest %q, want \"\"", oldest)
	}
	back.close()

	s.close()
	waitFor(t, "the room to be dropped once its stream ended", func() bool {
		_, ok := listedRoom(t, rootSite, followed)
		return !ok
	})
}

// TestRoomsWhileMessagesFlow: GET /rooms read while several clients post to
// a room is a valid listing every time: the room's subscriber count is exact
// and its last_id is always an id a post got, never going back; the last
// listing names the last message.
func TestRoomsWhileMessagesFlow(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	openStream(t, rootSite+"/stream/"+room)
	openStream(t, chatBase+"/stream/"+room)

	const posters, each = 4, 40
	posted := make([][]string, posters)
	errs := make(chan error, posters)
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				m, err := tryPostJSON(rootSite, room, fmt.Sprint("user", p), fmt.Sprint(i))
				if err != nil {
					errs <- err
					return
				}
				posted[p] = append(posted[p], m.ID)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var listed []string // last_id of each listing, in the order read
	for flowing := true; flowing; {
		select {
		case <-done:
			flowing = false // one more listing, after the last post
		default:
		}
		entry, ok := listedRoom(t, rootSite, room)
		if !ok || entry["subscribers"] != 2.0 {
			t.Fatalf("GET /rooms while posting: %v, want %s with 2 subscribers", entry, room)
		}
		id, _ := entry["last_id"].(string)
		listed = append(listed, id)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var newest string
	var newestSeq uint64
	byID := map[string]uint64{}
	for _, ids := range posted {
		for _, id := range ids {
			_, seq, _ := rooms.ParseID(id)
			byID[id] = seq
			if seq > newestSeq {
				newest, newestSeq = id, seq
			}
		}
	}
	var prev uint64
	distinct := map[string]bool{}
	for _, id := range listed {
		seq, ok := byID[id]
		if id != "" && !ok || seq < prev {
			t.Fatalf("last_id %q after %d: not a posted id, or going back; listed %v", id, prev, listed)
		}
		prev, distinct[id] = seq, true
	}
	if last := listed[len(listed)-1]; last != newest {
		t.Errorf("last_id after every post returned: %q, want %q", last, newest)
	}
	t.Logf("%d listings saw %d last_ids during %d posts", len(listed), len(distinct), posters*each)
	if len(distinct) < 3 {
		t.Errorf("the listings saw last_ids %v: they did not overlap the posts", listed)
	}
}
