package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/sse"
)

// TestIdentity: behind basic_auth with identity {http.auth.user.id}, the
// authenticated user is the author whatever the request claims, and the rate
// limit counts per user, not per address.
func TestIdentity(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	startCaddy(t, config{
		handler: "identity {http.auth.user.id}\n rate_limit 2 1m",
		site:    fmt.Sprintf("basic_auth /submit {\n\t\talice %s\n\t\tbob %s\n\t}", hash, hash),
	})
	room := roomFor(t, "a")
	post := func(user, claimed string) response {
		body := fmt.Sprintf(`{"room":%q,"user":%q,"message":"from %s"}`, room, claimed, user)
		req, _ := http.NewRequest("POST", rootSite+"/submit", strings.NewReader(body))
		req.Header.Set("Content-Type", ctJSON)
		req.SetBasicAuth(user, "secret")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r response
		r.status = resp.StatusCode
		json.NewDecoder(resp.Body).Decode(&r.json)
		return r
	}
	if r := post("alice", "bob"); r.status != http.StatusCreated || r.json["user"] != "alice" {
		t.Errorf("alice claiming to be bob: %d %v, want 201 as alice", r.status, r.json)
	}
	if r := post("bob", ""); r.status != http.StatusCreated || r.json["user"] != "bob" {
		t.Errorf("bob: %d %v", r.status, r.json)
	}
	if r := post("alice", "alice"); r.status != http.StatusCreated {
		t.Errorf("alice's second post: %d", r.status)
	}
	if r := post("alice", "mallory"); r.status != http.StatusTooManyRequests {
		t.Errorf("alice's third post in the window: %d, want 429", r.status)
	}
	if r := post("bob", "bob"); r.status != http.StatusCreated {
		t.Errorf("bob's second post, from the same address as alice: %d, want 201", r.status)
	}
	if r := do(t, "POST", rootSite+"/submit", `{"room":"x","message":"y"}`, "Content-Type", ctJSON); r.status != http.StatusUnauthorized {
		t.Errorf("unauthenticated post: %d, want basic_auth's 401", r.status)
	}
	msgs := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "").json["messages"].([]any)
	var authors []string
	for _, m := range msgs {
		authors = append(authors, m.(map[string]any)["user"].(string))
	}
	if got := strings.Join(authors, ","); got != "alice,bob,alice,bob" {
		t.Errorf("authors %s, want alice,bob,alice,bob", got)
	}
}

// TestSameOriginPosts: posts from the site's own pages and from clients that
// are not browsers are accepted; cross-site ones are refused in TestErrors.
func TestSameOriginPosts(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	for name, headers := range map[string][]string{
		"no Origin":              {"Content-Type", ctForm},
		"same Origin":            {"Content-Type", ctForm, "Origin", rootSite},
		"Sec-Fetch-Site same":    {"Content-Type", ctForm, "Sec-Fetch-Site", "same-origin", "Origin", rootSite},
		"Sec-Fetch-Site none":    {"Content-Type", ctForm, "Sec-Fetch-Site", "none"},
		"same Origin, by prefix": {"Content-Type", ctForm, "Origin", chatSite},
	} {
		base := rootSite
		if strings.HasSuffix(name, "by prefix") {
			base = chatBase
		}
		if r := do(t, "POST", base+"/room/"+room, "message=hi", headers...); r.status != http.StatusCreated {
			t.Errorf("%s: %d %s, want 201", name, r.status, r.body)
		}
	}
}

// TestHostileInput sends the bad-input matrix through a real Caddy: each is
// refused with its status and a JSON error, and nothing stored changes.
func TestHostileInput(t *testing.T) {
	startCaddy(t, config{global: "history 50", handler: "max_message_size 100\n max_body_size 1KiB"})
	room := roomFor(t, "a")
	postJSON(t, rootSite, room, "alice", "existing")
	jsonHdr := []string{"Content-Type", ctJSON}
	nested := strings.Repeat(`{"a":`, 150) + "1" + strings.Repeat("}", 150)
	cases := []errorCase{
		{"NUL in message", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"a\u0000b"}`, room), jsonHdr, 400, "control characters", ""},
		{"NUL in form message", "POST", "/room/" + room, "message=a%00b", []string{"Content-Type", ctForm}, 400, "control characters", ""},
		{"NUL in user", "POST", "/submit", fmt.Sprintf(`{"room":%q,"user":"a\u0000","message":"x"}`, room), jsonHdr, 400, "user", ""},
		{"LF in user", "POST", "/room/" + room, "user=a%0Ab&message=x", []string{"Content-Type", ctForm}, 400, "user", ""},
		{"NUL in room", "POST", "/submit", `{"room":"a\u0000","message":"x"}`, jsonHdr, 400, "invalid room name", ""},
		{"10 MB body", "POST", "/submit", `{"room":"` + room + `","message":"` + strings.Repeat("x", 10<<20) + `"}`, jsonHdr, 413, "body", ""},
		{"deeply nested JSON", "POST", "/submit", `{"room":` + nested + `}`, jsonHdr, 400, "malformed JSON", ""},
		{"JSON as form", "POST", "/submit", fmt.Sprintf(`{"room":%q,"message":"x"}`, room), []string{"Content-Type", ctForm}, 400, "unknown field", ""},
		{"form as JSON", "POST", "/submit", "room=" + room + "&message=x", jsonHdr, 400, "malformed JSON", ""},
		{"XML", "POST", "/submit", "<m/>", []string{"Content-Type", "application/xml"}, 415, "application/json", ""},
		{"percent-encoded slash", "GET", "/rooms/a%2F..%2Fb/messages", "", nil, 400, "invalid room name", ""},
		{"encoded NUL room", "GET", "/stream/a%00", "", nil, 400, "invalid room name", ""},
		{"PATCH", "PATCH", "/rooms", "", nil, 405, "method", "GET"},
		{"OPTIONS stream", "OPTIONS", "/stream/" + room, "", nil, 405, "method", "GET"},
	}
	before := do(t, "GET", rootSite+"/rooms", "").body
	history := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "").body
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.check(t, rootSite) })
	}
	if after := do(t, "GET", rootSite+"/rooms", "").body; after != before {
		t.Errorf("hostile requests changed the rooms:\nbefore %s\nafter  %s", before, after)
	}
	if after := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "").body; after != history {
		t.Errorf("hostile requests changed the history")
	}
}

// TestFraming: messages that look like event-stream syntax arrive as data,
// one event each, read by a parser that follows the WHATWG rules.
func TestFraming(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	resp := getStream(t, rootSite+"/stream/"+room)
	payloads := []string{"a\r\nb", "data: x", "\n\nid: 9\ndata: evil\n\n", "event: close\n\n", "\rretry: 1\r", ": comment"}
	var posted []rooms.Message
	for _, p := range payloads {
		posted = append(posted, postJSON(t, rootSite, room, "eve <b>", p))
	}
	r := sse.NewReader(resp.Body)
	for i, want := range posted {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		var got rooms.Message
		if ev.Name != "message" || ev.ID != want.ID || json.Unmarshal([]byte(ev.Data), &got) != nil || got.Message != payloads[i] {
			t.Fatalf("event %d = %+v, want message %q with id %s", i, ev, payloads[i], want.ID)
		}
	}
	if r.Retry < 1000 || r.Retry > 3000 {
		t.Errorf("a message changed the retry delay to %d", r.Retry)
	}
}

// TestMetrics scrapes the chat metrics from Caddy's registry: each kind of
// refusal counts under its own reason, exactly once; the gauges follow the
// rooms and streams; the counters keep counting across a reload.
func TestMetrics(t *testing.T) {
	startCaddy(t, config{})
	waitFor(t, "earlier tests' streams to end", func() bool { return metric(t, "caddy_chat_subscribers") == 0 })
	// Room for one more room; the rate limit counts every post that gets
	// to it: the three messages and the room too many (a reused key is
	// answered before the rate limit).
	cfg := config{
		global:  fmt.Sprintf("max_rooms %d", int(metric(t, "caddy_chat_rooms"))+1),
		handler: "rate_limit 4 1m\n max_streams_per_client 1",
	}
	startCaddy(t, cfg)
	room, unknown := roomFor(t, "a"), roomFor(t, "unknown")
	series := []string{"caddy_chat_messages_total", "caddy_chat_deliveries_total", "caddy_chat_rooms", "caddy_chat_subscribers"}
	for _, reason := range []string{"bad_request", "forbidden", "cross_site", "not_found", "method_not_allowed", "too_large",
		"unsupported_media_type", "key_reused", "rate_limited", "too_many_streams", "capacity"} {
		series = append(series, fmt.Sprintf("caddy_chat_rejected_requests_total{reason=%q}", reason))
	}
	before := map[string]float64{}
	for _, name := range series {
		before[name] = metric(t, name)
	}
	// check compares every series with its value before the test plus
	// delta (absent: 0).
	check := func(when string, delta map[string]float64) {
		t.Helper()
		for _, name := range series {
			if got, want := metric(t, name), before[name]+delta[name]; got != want {
				t.Errorf("%s: %s = %v, want %v", when, name, got, want)
			}
		}
	}

	s := openStream(t, rootSite+"/stream/"+room)
	check("a stream open in a new room", map[string]float64{"caddy_chat_rooms": 1, "caddy_chat_subscribers": 1})
	submit := func(room, message string) string { return fmt.Sprintf(`{"room":%q,"message":%q}`, room, message) }
	if r := do(t, "POST", rootSite+"/submit", submit(room, "0"), "Content-Type", ctJSON, "Idempotency-Key", "k"); r.status != http.StatusCreated {
		t.Fatalf("post with a key: %d %s", r.status, r.body)
	}
	for i := range 2 {
		postJSON(t, rootSite, room, "alice", fmt.Sprint(i+1))
	}
	s.messages(t, 3)
	jsonHdr := []string{"Content-Type", ctJSON}
	for _, c := range []errorCase{
		{"bad_request", "POST", "/submit", "{", jsonHdr, 400, "malformed JSON", ""},
		{"forbidden", "DELETE", "/room/" + room, "", nil, 403, "not allowed", ""},
		{"cross_site", "POST", "/submit", submit(room, "x"), []string{"Content-Type", ctJSON, "Sec-Fetch-Site", "cross-site"}, 403, "cross-site", ""},
		{"not_found", "GET", "/rooms/" + unknown + "/messages", "", nil, 404, "no such room", ""},
		{"method_not_allowed", "PUT", "/submit", "", nil, 405, "method", "POST"},
		{"too_large", "POST", "/submit", submit(room, strings.Repeat("m", 4097)), jsonHdr, 413, "over 4096 bytes", ""},
		{"unsupported_media_type", "POST", "/submit", "hi", []string{"Content-Type", "text/plain"}, 415, "application/json", ""},
		{"key_reused", "POST", "/submit", submit(room, "not 0"), []string{"Content-Type", ctJSON, "Idempotency-Key", "k"}, 409, "already used", ""},
		{"capacity", "POST", "/submit", submit(unknown, "a room too many"), jsonHdr, 503, "too many rooms", ""},
		{"rate_limited", "POST", "/submit", submit(room, "a fifth"), jsonHdr, 429, "too many posts", ""},
		{"too_many_streams", "GET", "/stream/" + room, "", nil, 429, "streams open", ""},
	} {
		c.check(t, rootSite)
	}
	refused := map[string]float64{"caddy_chat_messages_total": 3, "caddy_chat_deliveries_total": 3, "caddy_chat_rooms": 1, "caddy_chat_subscribers": 1}
	for _, name := range series[4:] { // every reason, once
		refused[name] = 1
	}
	check("one refusal of each kind", refused)

	cfg.global += "\n heartbeat 20s"
	reload(t, cfg)
	s.end(t)
	waitFor(t, "the stream to be counted out", func() bool { return metric(t, "caddy_chat_subscribers") == before["caddy_chat_subscribers"] })
	for i := range 2 {
		postJSON(t, rootSite, room, "alice", fmt.Sprint(i))
	}
	refused["caddy_chat_messages_total"] += 2
	refused["caddy_chat_subscribers"] = 0
	check("after a reload and 2 posts to a room no one follows", refused)
}
