package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// errorCase is one request that must be refused, and how.
type errorCase struct {
	name    string
	method  string
	path    string // relative to the mount point
	body    string
	headers []string
	status  int
	errHas  string // part of the JSON error message
	allow   string // the Allow header of a 405
}

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

func (c errorCase) check(t *testing.T, base string) {
	t.Helper()
	resp := do(t, c.method, base+c.path, c.body, c.headers...)
	if resp.status != c.status {
		t.Fatalf("%s %s: status %d (%s), want %d", c.method, c.path, resp.status, resp.body, c.status)
	}
	msg, _ := resp.json["error"].(string)
	if msg == "" || !strings.Contains(msg, c.errHas) {
		t.Errorf("%s %s: body %q, want a JSON error mentioning %q", c.method, c.path, resp.body, c.errHas)
	}
	if c.allow != "" && resp.header.Get("Allow") != c.allow {
		t.Errorf("Allow = %q, want %q", resp.header.Get("Allow"), c.allow)
	}
	if (c.status == http.StatusTooManyRequests || c.status == http.StatusServiceUnavailable) && resp.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

// TestErrors sends every kind of bad request of the errors table and checks
// its status and JSON error, and that none of them changed anything stored.
func TestErrors(t *testing.T) {
	startCaddy(t, config{global: "history 50", handler: "max_message_size 100\n max_body_size 1KiB"})
	room := roomFor(t, "a")
	postJSON(t, rootSite, room, "alice", "existing")
	jsonHdr := []string{"Content-Type", ctJSON}
	cases := []errorCase{
		{"invalid room in stream", "GET", "/stream/.hidden", "", nil, 400, "invalid room name", ""},
		{"encoded slash in room", "GET", "/stream/a%2Fb", "", nil, 400, "invalid room name", ""},
		{"dot-dot room", "POST", "/submit", `{"room":"../x","message":"x"}`, jsonHdr, 400, "invalid room name", ""},
		{"invalid room in submit", "POST", "/submit", `{"room":"a b","message":"x"}`, jsonHdr, 400, "invalid room name", ""},
		{"missing room", "POST", "/submit", `{"message":"x"}`, jsonHdr, 400, "invalid room name", ""},
		{"missing message", "POST", "/submit", fmt.Sprintf(`{"room":%q}`, room), jsonHdr, 400, "message", ""},
		{"empty message", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":""}`, room), jsonHdr, 400, "message", ""},
		{"malformed JSON", "POST", "/submit", `{"room":`, jsonHdr, 400, "malformed JSON", ""},
		{"JSON array", "POST", "/submit", `[1,2]`, jsonHdr, 400, "malformed JSON", ""},
		{"trailing JSON", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"x"} {}`, room), jsonHdr, 400, "malformed JSON", ""},
		{"unknown JSON field", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"x","admin":true}`, room), jsonHdr, 400, "unknown field", ""},
		{"number as message", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":5}`, room), jsonHdr, 400, "must be a string", ""},
		{"invalid UTF-8 JSON", "POST", "/submit", fmt.Sprintf("{\"room\":%q,\"message\":\"\xff\"}", room), jsonHdr, 400, "UTF-8", ""},
		{"invalid UTF-8 form", "POST", "/room/" + room, "message=%FF", []string{"Content-Type", ctForm}, 400, "UTF-8", ""},
		{"CR LF in user", "POST", "/submit", fmt.Sprintf(`{"room":%q,"user":"a\r\nb","message":"x"}`, room), jsonHdr, 400, "user", ""},
		{"user too long", "POST", "/submit", fmt.Sprintf(`{"room":%q,"user":%q,"message":"x"}`, room, strings.Repeat("u", 65)), jsonHdr, 400, "user", ""},
		{"bad idempotency key", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"x"}`, room), []string{"Content-Type", ctJSON, "Idempotency-Key", "has space"}, 400, "Idempotency-Key", ""},
		{"body room differs from path", "POST", "/room/" + room, "room=other&message=x", []string{"Content-Type", ctForm}, 400, "another room", ""},
		{"bad history", "GET", "/stream/" + room + "?history=-1", "", nil, 400, "history", ""},
		{"bad limit", "GET", "/rooms/" + room + "/messages?limit=0", "", nil, 400, "limit", ""},
		{"limit too big", "GET", "/rooms/" + room + "/messages?limit=1001", "", nil, 400, "limit", ""},
		{"limit not a number", "GET", "/rooms/" + room + "/messages?limit=ten", "", nil, 400, "limit", ""},
		{"cross-site by Sec-Fetch-Site", "POST", "/room/" + room, "message=x", []string{"Content-Type", ctForm, "Sec-Fetch-Site", "cross-site"}, 403, "cross-site", ""},
		{"cross-site by Origin", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"x"}`, room), []string{"Content-Type", ctJSON, "Origin", "https://evil.example"}, 403, "cross-site", ""},
		{"unknown room history", "GET", "/rooms/" + roomFor(t, "never") + "/messages", "", nil, 404, "no such room", ""},
		{"unknown room delete", "DELETE", "/room/" + roomFor(t, "never"), "", nil, 403, "not allowed", ""},
		{"PUT submit", "PUT", "/submit", "", nil, 405, "method", "POST"},
		{"POST stream", "POST", "/stream/" + room, "", nil, 405, "method", "GET"},
		{"DELETE rooms", "DELETE", "/rooms", "", nil, 405, "method", "GET"},
		{"POST messages", "POST", "/rooms/" + room + "/messages", "", nil, 405, "method", "GET"},
		{"PUT room", "PUT", "/room/" + room, "", nil, 405, "method", "GET, POST, DELETE"},
		{"message over limit", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":%q}`, room, strings.Repeat("m", 101)), jsonHdr, 413, "over 100 bytes", ""},
		{"body over limit", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"x","user":%q}`, room, strings.Repeat(" ", 2000)), jsonHdr, 413, "body", ""},
		{"text/plain", "POST", "/submit", "hello", []string{"Content-Type", "text/plain"}, 415, "application/json", ""},
		{"no content type", "POST", "/submit", "hello", nil, 415, "application/json", ""},
		{"multipart", "POST", "/submit", "--x--", []string{"Content-Type", "multipart/form-data; boundary=x"}, 415, "application/json", ""},
	}
	before := do(t, "GET", rootSite+"/rooms", "").body
	history := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "").body
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.check(t, rootSite)
			c.check(t, chatBase)
		})
	}
	if after := do(t, "GET", rootSite+"/rooms", "").body; after != before {
		t.Errorf("bad requests changed the rooms:\nbefore %s\nafter  %s", before, after)
	}
	if after := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "").body; after != history {
		t.Errorf("bad requests changed the history:\nbefore %s\nafter  %s", history, after)
	}
}

// TestAllowlist: with a rooms allowlist, other names are refused (403), and
// the listing shows exactly the allowed rooms; without allow_delete, DELETE
// is refused before the room is even looked up.
func TestAllowlist(t *testing.T) {
	lobby, support := roomFor(t, "lobby"), roomFor(t, "support")
	startCaddy(t, config{handler: "rooms " + lobby + " " + support})
	posted := postJSON(t, rootSite, lobby, "alice", "hi")
	for _, c := range []errorCase{
		{"stream", "GET", "/stream/elsewhere", "", nil, 403, "not open here", ""},
		{"submit", "POST", "/submit", `{"room":"elsewhere","message":"x"}`, []string{"Content-Type", ctJSON}, 403, "not open here", ""},
		{"history", "GET", "/rooms/elsewhere/messages", "", nil, 403, "not open here", ""},
		{"delete", "DELETE", "/room/" + lobby, "", nil, 403, "not allowed", ""},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, rootSite) })
	}
	resp := do(t, "GET", chatBase+"/rooms", "")
	want := fmt.Sprintf(`{"rooms":[{"name":%q,"subscribers":0,"users":0,"last_id":%q},{"name":%q,"subscribers":0,"users":0,"last_id":""}]}`,
		lobby, posted.ID, support)
	if strings.TrimSpace(resp.body) != want {
		t.Errorf("GET /rooms = %s, want %s", resp.body, want)
	}
}

// TestLimitsRespond: the rate limit answers 429 and capacity limits 503, each
// with Retry-After.
func TestLimitsRespond(t *testing.T) {
	startCaddy(t, config{})
	existing := len(do(t, "GET", rootSite+"/rooms", "").json["rooms"].([]any))
	startCaddy(t, config{global: fmt.Sprintf("max_rooms %d\n max_subscribers 1", existing+1), handler: "rate_limit 2 1m"})
	room := roomFor(t, "a")
	postJSON(t, rootSite, room, "alice", "1")
	postJSON(t, rootSite, room, "alice", "2")
	for _, c := range []errorCase{
		{"rate limited", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"3"}`, room), []string{"Content-Type", ctJSON}, 429, "too many posts", ""},
		{"too many rooms", "GET", "/stream/" + roomFor(t, "b"), "", nil, 503, "too many rooms", ""},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, rootSite) })
	}
	openStream(t, rootSite+"/stream/"+room)
	(errorCase{"too many subscribers", "GET", "/stream/" + room, "", nil, 503, "too many subscribers", ""}).check(t, rootSite)
}

// TestUnownedPathsGoToNext: paths the handler does not serve reach the next
// handler, at the root and under a prefix.
func TestUnownedPathsGoToNext(t *testing.T) {
	startCaddy(t, config{})
	for url, want := range map[string]string{
		rootSite + "/nope":          "not chat",
		rootSite + "/stream":        "not chat",
		rootSite + "/stream/a/b":    "not chat",
		rootSite + "/rooms/a/other": "not chat",
		chatBase + "/nope":          "not chat, under /chat",
		chatBase + "/submit/extra":  "not chat, under /chat",
		chatSite + "/submit":        "outside chat",
		chatSite + "/stream/lobby":  "outside chat",
	} {
		if resp := do(t, "GET", url, ""); resp.status != http.StatusNotFound || resp.body != want {
			t.Errorf("GET %s = %d %q, want 404 %q", url, resp.status, resp.body, want)
		}
	}
}

// TestSubmitForms: the form post of the tutorial, a browser's form post
// (303 to the room page by a relative Location), and idempotent retries.
func TestSubmitForms(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	resp := do(t, "POST", chatBase+"/room/"+room, "user=bob&message=hello+there", "Content-Type", ctForm)
	if resp.status != http.StatusCreated || resp.json["user"] != "bob" || resp.json["message"] != "hello there" || resp.json["room"] != room {
		t.Errorf("form post: %d %s", resp.status, resp.body)
	}
	resp = do(t, "POST", chatBase+"/submit", "room="+room+"&message=hi", "Content-Type", ctForm)
	if resp.status != http.StatusCreated || resp.json["user"] != "anonymous" {
		t.Errorf("form post without a user: %d %s, want user anonymous", resp.status, resp.body)
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for path, want := range map[string]string{"/room/" + room: room, "/submit": "room/" + room} {
		req, _ := http.NewRequest("POST", chatBase+path, strings.NewReader("room="+room+"&message=from+a+browser"))
		req.Header.Set("Content-Type", ctForm)
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		r, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
			t.Errorf("browser form post to %s: %d Location %q, want 303 %q", path, r.StatusCode, r.Header.Get("Location"), want)
		}
	}

	body := fmt.Sprintf(`{"room":%q,"message":"once"}`, room)
	first := do(t, "POST", rootSite+"/submit", body, "Content-Type", ctJSON, "Idempotency-Key", "retry-1")
	again := do(t, "POST", rootSite+"/submit", body, "Content-Type", ctJSON, "Idempotency-Key", "retry-1")
	if first.status != http.StatusCreated || again.status != http.StatusOK || again.body != first.body {
		t.Errorf("idempotent retry: %d %s then %d %s; want 201 then 200 with the same message", first.status, first.body, again.status, again.body)
	}
	msgs := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "").json["messages"].([]any)
	if n := strings.Count(fmt.Sprint(msgs), "once"); n != 1 {
		t.Errorf("the retried message is stored %d times", n)
	}
}

// TestMessagesAPI: GET /rooms/{room}/messages pages through history,
// forward with after and back with before.
func TestMessagesAPI(t *testing.T) {
	startCaddy(t, config{global: "history 10"})
	room := roomFor(t, "a")
	var ids []string
	for i := range 12 {
		ids = append(ids, postJSON(t, rootSite, room, "alice", fmt.Sprint(i)).ID)
	}
	get := func(query string) []string {
		resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages"+query, "")
		if resp.status != http.StatusOK {
			t.Fatalf("%s: %d %s", query, resp.status, resp.body)
		}
		var out []string
		for _, m := range resp.json["messages"].([]any) {
			out = append(out, m.(map[string]any)["message"].(string))
		}
		return out
	}
	for query, want := range map[string]string{
		"":                                       "[2 3 4 5 6 7 8 9 10 11]",
		"?limit=3":                               "[9 10 11]",
		"?after=" + ids[4]:                       "[5 6 7 8 9 10 11]",
		"?after=" + ids[4] + "&limit=2":          "[5 6]",
		"?after=" + ids[11]:                      "[]",
		"?before=" + ids[6]:                      "[2 3 4 5]",
		"?before=" + ids[6] + "&limit=2":         "[4 5]",
		"?after=" + ids[3] + "&before=" + ids[7]: "[4 5 6]",
		"?before=" + ids[2]:                      "[]",
	} {
		if got := fmt.Sprint(get(query)); got != want {
			t.Errorf("messages%s = %s, want %s", query, got, want)
		}
	}
	resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages?after="+ids[0], "")
	if resp.json["reset"] != true || resp.json["oldest"] != ids[2] {
		t.Errorf("after an id older than history: %s, want reset with oldest %s", resp.body, ids[2])
	}
	// Paging back from the newest, by the oldest id of each page, reads
	// the whole history once, in order, and ends with an empty page.
	var back []string
	for before := ""; ; {
		page := do(t, "GET", rootSite+"/rooms/"+room+"/messages?limit=3&before="+before, "")
		msgs := page.json["messages"].([]any)
		if len(msgs) == 0 {
			break
		}
		var texts []string
		for _, m := range msgs {
			texts = append(texts, m.(map[string]any)["message"].(string))
		}
		back = append(texts, back...)
		before = msgs[0].(map[string]any)["id"].(string)
		if len(back) > 12 {
			t.Fatalf("paging back did not end: %v", back)
		}
	}
	if fmt.Sprint(back) != "[2 3 4 5 6 7 8 9 10 11]" {
		t.Errorf("paged back %v, want the history in order, each message once", back)
	}
	list := do(t, "GET", rootSite+"/rooms", "").body
	if !strings.Contains(list, fmt.Sprintf(`{"name":%q,"subscribers":0,"users":0,"last_id":%q}`, room, ids[11])) {
		t.Errorf("GET /rooms = %s, missing %s with last id %s", list, room, ids[11])
	}
}

// TestHistoryPagesBackToStart: a reader paging back with before, from the
// newest message by the oldest id of each answer, reads 130 messages in
// pages of 50, 50 and 30: every id once, in order, though messages keep
// coming meanwhile, and the last page says it reached the start, so that
// the reader asks no more. With 150 messages, the third full page says so.
// On the memory and file stores, and with Redis, paging on a second node.
func TestHistoryPagesBackToStart(t *testing.T) {
	srv := redistest.Start(t)
	defer reload(t, config{})
	for _, tc := range []struct {
		name, global string
		node         func(t *testing.T) string // where the reader pages
	}{
		{"memory", "store memory", nil},
		{"file", "store file " + filepath.Join(t.TempDir(), "chat.db"), nil},
		{"redis", redisGlobal(srv), func(t *testing.T) string { return redisNode(t, srv.URL()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			startCaddy(t, config{global: tc.global + "\n\t\thistory 1000"})
			reader := rootSite
			if tc.node != nil {
				reader = tc.node(t)
			}
			for _, total := range []int{130, 150} {
				room := roomFor(t, fmt.Sprint(total))
				var posted []string
				for i := range total {
					posted = append(posted, postJSON(t, rootSite, room, "alice", fmt.Sprint(i)).ID)
				}
				var read []string
				var sizes []int
				for before := ""; ; {
					page := messagesPage(t, reader, room, "limit=50&before="+before)
					if page.Reset || page.More {
						t.Fatalf("before=%s: reset %v, more %v; want neither", before, page.Reset, page.More)
					}
					var pageIDs []string
					for _, m := range page.Messages {
						pageIDs = append(pageIDs, m.ID)
					}
					read = append(pageIDs, read...)
					sizes = append(sizes, len(page.Messages))
					if page.Start {
						break
					}
					if len(sizes) == 1 {
						// Live messages come after the first page: the
						// pages before it stay as they were.
						for i := range 5 {
							postJSON(t, rootSite, room, "bob", fmt.Sprint("live ", i))
						}
					}
					if len(page.Messages) == 0 || len(sizes) > total/50+1 {
						t.Fatalf("after pages of %v, no answer says it reached the start", sizes)
					}
					before = page.Messages[0].ID
				}
				wantSizes := []int{50, 50, 30}
				if total == 150 {
					wantSizes = []int{50, 50, 50}
				}
				if !slices.Equal(sizes, wantSizes) {
					t.Errorf("%d messages paged back in pages of %v, want %v", total, sizes, wantSizes)
				}
				if strings.Join(read, ",") != strings.Join(posted, ",") {
					t.Errorf("%d messages paged back as\n%s\nwant each once, in order:\n%s", total, strings.Join(read, ","), strings.Join(posted, ","))
				}
				if page := messagesPage(t, reader, room, "before="+posted[0]); len(page.Messages) != 0 || !page.Start {
					t.Errorf("before the first message: %d messages, start %v; want none and the start", len(page.Messages), page.Start)
				}
				if page := messagesPage(t, reader, room, "limit=50"); page.Start {
					t.Errorf("the newest 50 of %d say they reach the start", total+5)
				}
			}
		})
	}
}

// historyPage is an answer of GET /rooms/{room}/messages.
type historyPage struct {
	Messages []rooms.Message `json:"messages"`
	Reset    bool            `json:"reset"`
	More     bool            `json:"more"`
	Start    bool            `json:"start"`
}

// messagesPage asks site for the messages of room with the query.
func messagesPage(t *testing.T, site, room, query string) historyPage {
	t.Helper()
	resp := do(t, "GET", site+"/rooms/"+room+"/messages?"+query, "")
	var page historyPage
	if resp.status != http.StatusOK {
		t.Fatalf("messages?%s: %d %s", query, resp.status, resp.body)
	}
	if err := json.Unmarshal([]byte(resp.body), &page); err != nil {
		t.Fatalf("messages?%s: %v", query, err)
	}
	return page
}
