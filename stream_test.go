package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

var defaultConfig = config{global: "history 50\n heartbeat 15s", handler: "allow_delete"}

func TestStreamFormat(t *testing.T) {
	startCaddy(t, defaultConfig)
	room := roomFor(t, "a")
	s := openStream(t, rootSite+"/stream/"+room)
	for header, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache, no-transform",
		"X-Accel-Buffering": "no",
	} {
		if got := s.resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	posted := postJSON(t, rootSite, room, "alice", "two\nlines")
	ev := s.next(t)
	if ev.Name != "message" || ev.ID != posted.ID {
		t.Fatalf("event %+v, want a message with id %q", ev, posted.ID)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
		t.Fatal(err)
	}
	if got["room"] != room || got["user"] != "alice" || got["message"] != "two\nlines" || got["id"] != posted.ID {
		t.Errorf("data = %v", got)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(fmt.Sprint(got["time"])) {
		t.Errorf("time %v is not RFC 3339 UTC with milliseconds", got["time"])
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(posted.ID) || len(posted.ID) > 32 {
		t.Errorf("id %q is not short and URL-safe", posted.ID)
	}
}

// TestSubscribersAgree: two subscribers of a room receive the same messages,
// with the same ids, in the same order, while several clients post at once;
// a subscriber of another room receives none of them.
func TestSubscribersAgree(t *testing.T) {
	startCaddy(t, defaultConfig)
	room, other := roomFor(t, "a"), roomFor(t, "b")
	s1 := openStream(t, rootSite+"/stream/"+room)
	s2 := openStream(t, chatBase+"/stream/"+room)
	s3 := openStream(t, rootSite+"/stream/"+other)

	const posters, each = 4, 25
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				if _, err := tryPostJSON(rootSite, room, fmt.Sprintf("user%d", p), fmt.Sprintf("%d-%d", p, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	got1, got2 := s1.messages(t, posters*each), s2.messages(t, posters*each)
	if ids(got1) != ids(got2) {
		t.Errorf("subscribers disagree:\n%s\n%s", ids(got1), ids(got2))
	}
	seen := map[string]bool{}
	var prevSeq uint64
	for _, m := range got1 {
		_, seq, ok := rooms.ParseID(m.ID)
		if !ok || seq <= prevSeq || seen[m.Message] {
			t.Fatalf("message %q (id %q) is out of order or repeated", m.Message, m.ID)
		}
		prevSeq, seen[m.Message] = seq, true
	}
	marker := postJSON(t, rootSite, other, "carol", "only for b")
	if got := s3.messages(t, 1); got[0].ID != marker.ID {
		t.Errorf("subscriber of another room got %q first, want only its own message %q", got[0].Message, marker.Message)
	}
	s1.quiet(t, 100*time.Millisecond)
}

// TestResume: a client that disconnects and comes back with its last id gets
// exactly what it missed, by header or query parameter.
func TestResume(t *testing.T) {
	startCaddy(t, defaultConfig)
	room := roomFor(t, "a")
	s := openStream(t, rootSite+"/stream/"+room)
	for i := range 3 {
		postJSON(t, rootSite, room, "alice", fmt.Sprint("before ", i))
	}
	seen := s.messages(t, 3)
	s.close()
	var missed []rooms.Message
	for i := range 5 {
		missed = append(missed, postJSON(t, rootSite, room, "alice", fmt.Sprint("missed ", i)))
	}
	last := seen[2].ID
	for name, url := range map[string][]string{
		"header":             {rootSite + "/stream/" + room, "Last-Event-ID", last},
		"query":              {rootSite + "/stream/" + room + "?last_event_id=" + last},
		"header wins":        {rootSite + "/stream/" + room + "?last_event_id=" + missed[3].ID, "Last-Event-ID", last},
		"id wins over count": {rootSite + "/stream/" + room + "?history=1", "Last-Event-ID", last},
		"under a prefix":     {chatBase + "/stream/" + room, "Last-Event-ID", last},
	} {
		t.Run(name, func(t *testing.T) {
			back := openStream(t, url[0], url[1:]...)
			if got := back.messages(t, 5); ids(got) != ids(missed) {
				t.Errorf("replayed %s, want %s", texts(got), texts(missed))
			}
			back.quiet(t, 100*time.Millisecond)
		})
	}
	t.Run("history=N", func(t *testing.T) {
		fresh := openStream(t, rootSite+"/stream/"+room+"?history=2")
		if got := fresh.messages(t, 2); ids(got) != ids(missed[3:]) {
			t.Errorf("history=2 replayed %s, want the last two", texts(got))
		}
		live := postJSON(t, rootSite, room, "alice", "live")
		if got := fresh.messages(t, 1); got[0].ID != live.ID {
			t.Errorf("after the replay: %q, want the live message", got[0].Message)
		}
	})
}

// TestReset: an id from another epoch, or older than the history holds, gets
// a reset event naming the oldest retained id, then the whole history.
func TestReset(t *testing.T) {
	startCaddy(t, config{global: "history 3", handler: ""})
	room := roomFor(t, "a")
	var all []rooms.Message
	for i := range 5 {
		all = append(all, postJSON(t, rootSite, room, "alice", fmt.Sprint(i)))
	}
	for name, id := range map[string]string{
		"too old": all[0].ID,
		"foreign": "zzzz-3",
		"garbage": "not an id",
	} {
		t.Run(name, func(t *testing.T) {
			s := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", id)
			ev := s.next(t)
			var data map[string]string
			if ev.Name != "reset" || json.Unmarshal([]byte(ev.Data), &data) != nil || data["oldest"] != all[2].ID {
				t.Fatalf("first event %q %s, want reset with oldest %q", ev.Name, ev.Data, all[2].ID)
			}
			if got := s.messages(t, 3); ids(got) != ids(all[2:]) {
				t.Errorf("after reset replayed %s, want the retained 2,3,4", texts(got))
			}
		})
	}
	t.Run("edge of history is no reset", func(t *testing.T) {
		s := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", all[1].ID)
		if got := s.messages(t, 3); ids(got) != ids(all[2:]) {
			t.Errorf("replayed %s", texts(got))
		}
	})
}

func TestHeartbeat(t *testing.T) {
	startCaddy(t, config{global: "heartbeat 100ms"})
	resp := getStream(t, rootSite+"/stream/"+roomFor(t, "a"))
	buf := make([]byte, 0, 256)
	deadline := time.Now().Add(wait)
	for strings.Count(string(buf), ": ping\n\n") < 2 && time.Now().Before(deadline) {
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		if err != nil {
			t.Fatal(err)
		}
		buf = buf[:len(buf)+n]
	}
	if !strings.HasPrefix(string(buf), "retry: ") || strings.Count(string(buf), ": ping\n\n") < 2 {
		t.Errorf("stream = %q, want a retry line, then ping comments", buf)
	}
}

// TestDeleteSendsClose: deleting a room ends its streams with a close event,
// drops its history, and the name starts afresh.
func TestDeleteSendsClose(t *testing.T) {
	startCaddy(t, defaultConfig)
	room := roomFor(t, "a")
	s := openStream(t, chatBase+"/stream/"+room)
	old := postJSON(t, rootSite, room, "alice", "soon gone")
	if resp := do(t, "DELETE", chatBase+"/room/"+room, ""); resp.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", resp.status, resp.body)
	}
	evs := s.end(t)
	if len(evs) != 2 || evs[0].ID != old.ID || evs[1].Name != "close" {
		t.Errorf("events before the end: %+v, want the message then close", evs)
	}
	if resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", ""); resp.status != http.StatusNotFound {
		t.Errorf("history after delete: %d, want 404", resp.status)
	}
	fresh := postJSON(t, rootSite, room, "alice", "new")
	back := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", old.ID)
	if ev := back.next(t); ev.Name != "reset" {
		t.Errorf("an id from before the delete got %q, want reset", ev.Name)
	}
	if got := back.messages(t, 1); got[0].ID != fresh.ID {
		t.Errorf("replay after delete: %q", got[0].Message)
	}
}

// TestStreamBehindEncode: with encode in the site, the stream's headers and
// messages still arrive at once, uncompressed.
func TestStreamBehindEncode(t *testing.T) {
	startCaddy(t, config{site: "encode gzip zstd"})
	room := roomFor(t, "a")
	resp := getStream(t, rootSite+"/stream/"+room, "Accept-Encoding", "gzip, zstd")
	if enc := resp.Header.Get("Content-Encoding"); enc != "" || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("Content-Encoding %q, Content-Type %q; want an uncompressed event stream", enc, resp.Header.Get("Content-Type"))
	}
	s := &stream{resp: resp, events: readEvents(resp.Body), cancel: func() {}}
	posted := postJSON(t, rootSite, room, "alice", "through encode")
	if got := s.messages(t, 1); got[0].ID != posted.ID {
		t.Errorf("got %q", got[0].Message)
	}
}

// TestRetryHintsSpread: each stream's retry hint is its own, between 1 and
// 3 s, so that a crowd whose streams end at once comes back over 2 s.
func TestRetryHintsSpread(t *testing.T) {
	lowest, highest := maxReconnectDelay, minReconnectDelay
	for range 1000 {
		var ms int
		if _, err := fmt.Sscanf(string(streamStart(nil)), "retry: %d\n\n", &ms); err != nil {
			t.Fatal(err)
		}
		if ms < 1000 || ms > 3000 {
			t.Fatalf("retry: %d, want 1000 to 3000", ms)
		}
		lowest, highest = min(lowest, ms), max(highest, ms)
	}
	if lowest > 1200 || highest < 2800 {
		t.Errorf("1000 retry hints between %d and %d ms, want them spread over 1000-3000", lowest, highest)
	}
}

// TestStuckFirstWriteEndsOnReload: a client that reads nothing while its
// stream's first write (the head and a replay larger than the socket
// buffers) is under way does not hold the old config for the write timeout:
// the write fails when the config stops, and the stream is counted out.
func TestStuckFirstWriteEndsOnReload(t *testing.T) {
	cfg := config{handler: "max_message_size 1MiB\n max_body_size 8MiB"}
	startCaddy(t, cfg)
	waitFor(t, "earlier tests' streams to end", func() bool { return metric(t, "caddy_chat_subscribers") == 0 })
	room := roomFor(t, "a")
	// JSON escapes each < as \u003c: a 6 MiB frame, more than the socket
	// buffers of a client that reads nothing hold.
	postJSON(t, rootSite, room, "alice", strings.Repeat("<", 1<<20))

	c, err := net.DialTimeout("tcp", strings.TrimPrefix(rootSite, "http://"), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	_ = c.SetDeadline(time.Now().Add(4 * wait))
	if _, err := fmt.Fprintf(c, "GET /stream/%s?history=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", room); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream to open", func() bool { return metric(t, "caddy_chat_subscribers") == 1 })
	time.Sleep(200 * time.Millisecond) // the first write fills the socket buffers and blocks

	cfg.global = "heartbeat 20s"
	reload(t, cfg)
	deadline := time.Now().Add(2 * time.Second)
	for metric(t, "caddy_chat_subscribers") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stuck stream still holds its subscription 2 s after the reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAside: what f returns reaches the caller, and a panic or Goexit in
// f is raised in the caller, which net/http recovers, never lost on the
// goroutine aside.
func TestAside(t *testing.T) {
	errWrite := errors.New("write failed")
	raised := func(want string) func(any) bool {
		return func(p any) bool { return p != nil && strings.Contains(fmt.Sprint(p), want) }
	}
	tests := []struct {
		name    string
		f       func() error
		wantErr error
		panic   func(any) bool // whether the value raised in the caller is right
	}{
		{"returns nil", func() error { return nil }, nil, nil},
		{"returns the error", func() error { return errWrite }, errWrite, nil},
		{"raises ErrAbortHandler as it is", func() error { panic(http.ErrAbortHandler) }, nil, func(p any) bool { return p == http.ErrAbortHandler }},
		{"raises a panic with where it happened", func() error { panic("boom") }, nil, raised("boom\n\npanicked aside, at:\n")},
		{"raises a panic with f's frame", func() error { panic("boom") }, nil, raised("TestAside")},
		{"raises a Goexit as a panic", func() error { runtime.Goexit(); return nil }, nil, raised("runtime.Goexit")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			panicked := func() (p any) {
				defer func() { p = recover() }()
				err = aside(tt.f)
				return nil
			}()
			if err != tt.wantErr {
				t.Errorf("aside = %v, want %v", err, tt.wantErr)
			}
			if tt.panic == nil && panicked != nil || tt.panic != nil && !tt.panic(panicked) {
				t.Errorf("aside raised %v", panicked)
			}
		})
	}
}

// TestStreamCarriesActions: an edit and a delete reach an open stream as
// edit and delete events with ids of their own, a stream resuming from
// before them gets the room as it stands and the actions, and the JSON
// history shows the edit and leaves the deleted message out. The actions
// are taken on the Manager that the running Caddy serves: the HTTP routes
// for them are built on it.
func TestStreamCarriesActions(t *testing.T) {
	startCaddy(t, defaultConfig)
	room := roomFor(t, "a")
	spam := postJSON(t, rootSite, room, "sam", "buy cheap pills")
	typo := postJSON(t, rootSite, room, "alice", "helo")
	s := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", typo.ID)
	defer s.close()

	key := "chat " + StoreMemory + " "
	shared, _, err := managers.LoadOrNew(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer managers.Delete(key)
	m := shared.(managerDestructor).Manager
	del, _, err := m.Submit(room, rooms.Post{User: "mod", Verified: true, Action: rooms.ActionDelete, Target: spam.ID, ByModerator: true})
	if err != nil {
		t.Fatal(err)
	}
	ed, _, err := m.Submit(room, rooms.Post{User: "alice", Action: rooms.ActionEdit, Target: typo.ID, Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}

	wantDelete := fmt.Sprintf(`{"id":%q,"target":%q,"by":"moderator","time":%q}`, del.ID, spam.ID, del.Time.Format(rooms.TimeLayout))
	wantEdit := fmt.Sprintf(`{"id":%q,"target":%q,"message":"hello","time":%q}`, ed.ID, typo.ID, ed.Time.Format(rooms.TimeLayout))
	if ev := s.next(t); ev.Name != "delete" || ev.ID != del.ID || ev.Data != wantDelete {
		t.Errorf("event %+v, want a delete with id %s and data %s", ev, del.ID, wantDelete)
	}
	if ev := s.next(t); ev.Name != "edit" || ev.ID != ed.ID || ev.Data != wantEdit {
		t.Errorf("event %+v, want an edit with id %s and data %s", ev, ed.ID, wantEdit)
	}

	back := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", spam.ID)
	defer back.close()
	var got []string
	for range 3 {
		ev := back.next(t)
		if strings.Contains(ev.Data, "pills") {
			t.Fatalf("a stream resuming before the deleted message received %+v", ev)
		}
		got = append(got, ev.Name+" "+ev.ID)
	}
	if want := []string{"message " + typo.ID, "delete " + del.ID, "edit " + ed.ID}; !slices.Equal(got, want) {
		t.Errorf("a stream resuming before the actions received %v, want %v", got, want)
	}

	resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "")
	if strings.Contains(resp.body, "pills") || !strings.Contains(resp.body, `"message":"hello"`) || !strings.Contains(resp.body, `"edited":"`+ed.Time.Format(rooms.TimeLayout)+`"`) {
		t.Errorf("history after the actions: %s, want hello, edited, and no deleted message", resp.body)
	}
}
