package chat

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// trustConfig serves the rooms twice on the root site: at /auth/, behind
// basic_auth for alice and bob (password "secret"), with identity and the
// given subdirectives; and at the root, public, with public's.
func trustConfig(t *testing.T, auth, public string) config {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return config{
		handler: public,
		site: fmt.Sprintf(`handle_path /auth/* {
		basic_auth {
			alice %[1]s
			bob %[1]s
		}
		chat {
			identity {http.auth.user.id}
			%[2]s
		}
	}`, hash, auth),
	}
}

// poster posts as one client of the site: signed in as login through
// /auth/, or, when login is "", anonymously through the public route. It
// connects from a loopback address of its own, so that two posters are two
// client addresses.
type poster struct {
	login  string
	client *http.Client
}

// newPoster returns a poster connecting from 127.0.0.<host>.
func newPoster(t *testing.T, login string, host byte) poster {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}, Timeout: wait}
	transport := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		// The URL keeps the site's host name, which Caddy matches on;
		// the connection goes to it over IPv4, from this poster's address.
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return dialer.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
	}}
	t.Cleanup(transport.CloseIdleConnections)
	return poster{login: login, client: &http.Client{Transport: transport, Timeout: wait}}
}

// post submits text to room, claiming user, with an Idempotency-Key when key
// is not "".
func (p poster) post(t *testing.T, room, user, text, key string) response {
	t.Helper()
	base := rootSite
	if p.login != "" {
		base += "/auth"
	}
	body, _ := json.Marshal(map[string]string{"room": room, "user": user, "message": text})
	req, _ := http.NewRequest("POST", base+"/submit", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", ctJSON)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if p.login != "" {
		req.SetBasicAuth(p.login, "secret")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the body: %v", req.URL, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if err := json.Unmarshal(b, &r.json); err != nil {
		t.Fatalf("POST %s: %d, not JSON: %q", req.URL, resp.StatusCode, b)
	}
	return r
}

// history returns the room's messages, "user:text:verified" each,
// comma-separated, read anonymously.
func history(t *testing.T, room string) string {
	t.Helper()
	resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "")
	if resp.status == http.StatusNotFound {
		return ""
	}
	var out []string
	for _, m := range resp.json["messages"].([]any) {
		m := m.(map[string]any)
		out = append(out, fmt.Sprintf("%s:%s:%v", m["user"], m["message"], m["verified"]))
	}
	return strings.Join(out, ",")
}

// refused checks that r is a JSON refusal with status.
func refused(t *testing.T, what string, r response, status int) {
	t.Helper()
	if r.status != status || r.json["error"] == nil || r.json["error"] == "" {
		t.Errorf("%s: %d %s, want %d with a JSON error", what, r.status, r.body, status)
	}
}

// TestVerifiedAuthors: a post through the signed-in route is verified and
// authored by the login, whatever user it claims; an anonymous one is not,
// and once alice has posted verified, an anonymous "alice" is refused in
// that room, and only there. Readers see the difference in history and on
// the stream.
func TestVerifiedAuthors(t *testing.T) {
	startCaddy(t, trustConfig(t, "", ""))
	room, other := roomFor(t, "a"), roomFor(t, "b")
	anon, alice := newPoster(t, "", 2), newPoster(t, "alice", 3)
	stream := openStream(t, rootSite+"/stream/"+room)

	if r := anon.post(t, room, "alice", "I am alice", ""); r.status != http.StatusCreated || r.json["verified"] != false {
		t.Errorf("anonymous alice before the real one: %d %s, want 201, unverified", r.status, r.body)
	}
	if r := alice.post(t, room, "mallory", "signed in", ""); r.status != http.StatusCreated || r.json["user"] != "alice" || r.json["verified"] != true {
		t.Errorf("alice signed in, claiming mallory: %d %s, want 201 as alice, verified", r.status, r.body)
	}
	before := metric(t, `caddy_chat_rejected_requests_total{reason="name_reserved"}`)
	for _, claimed := range []string{"alice", " Alice"} {
		refused(t, fmt.Sprintf("anonymous %q after the real one", claimed), anon.post(t, room, claimed, "I am alice too", ""), http.StatusForbidden)
	}
	if got := metric(t, `caddy_chat_rejected_requests_total{reason="name_reserved"}`) - before; got != 2 {
		t.Errorf("name_reserved counted %v times, want 2", got)
	}
	if r := anon.post(t, room, "bob", "just bob", ""); r.status != http.StatusCreated || r.json["verified"] != false {
		t.Errorf("anonymous bob, who never signed in here: %d %s, want 201, unverified", r.status, r.body)
	}
	if r := anon.post(t, other, "alice", "elsewhere", ""); r.status != http.StatusCreated {
		t.Errorf("anonymous alice in a room the real one never posted in: %d %s, want 201", r.status, r.body)
	}

	want := "alice:I am alice:false,alice:signed in:true,bob:just bob:false"
	if got := history(t, room); got != want {
		t.Errorf("history %s, want %s", got, want)
	}
	var live []string
	for _, m := range stream.messages(t, 3) {
		live = append(live, fmt.Sprintf("%s:%s:%v", m.User, m.Message, m.Verified))
	}
	if got := strings.Join(live, ","); got != want {
		t.Errorf("stream %s, want %s", got, want)
	}
}

// TestInvisibleCharactersInNames: once alice has posted verified, an
// anonymous "alice" padded with code points a page does not show (a
// grapheme joiner, a variation selector, a Hangul filler) is refused with
// 403, and its stream counts as anonymous in presence; a name made of
// nothing else is refused with 400.
func TestInvisibleCharactersInNames(t *testing.T) {
	startCaddy(t, trustConfig(t, "", ""))
	room := roomFor(t, "a")
	anon := newPoster(t, "", 2)
	if r := newPoster(t, "alice", 3).post(t, room, "", "signed in", ""); r.status != http.StatusCreated {
		t.Fatalf("alice signed in: %d %s", r.status, r.body)
	}
	for _, claimed := range []string{"alice\u034f", "alice\ufe0f", "\u3164alice"} {
		refused(t, fmt.Sprintf("anonymous %+q", claimed), anon.post(t, room, claimed, "I am alice", ""), http.StatusForbidden)
	}
	refused(t, "a Hangul filler alone", anon.post(t, room, "\u3164", "who am I", ""), http.StatusBadRequest)
	if got, want := history(t, room), "alice:signed in:true"; got != want {
		t.Errorf("history %s, want %s", got, want)
	}
	openStream(t, rootSite+"/stream/"+room+"?user="+url.QueryEscape("alice\u034f"))
	if got := presenceText(presenceOf(t, rootSite, room)); got != "anonymous=1" {
		t.Errorf("presence with a stream of alice\\u034f: %s, want anonymous=1", got)
	}
}

// TestReserveNamesOff: a site that lets anyone use any name says so, and
// the impostor is still told apart by the missing mark.
func TestReserveNamesOff(t *testing.T) {
	startCaddy(t, trustConfig(t, "", "reserve_names off"))
	room := roomFor(t, "a")
	newPoster(t, "alice", 3).post(t, room, "", "signed in", "")
	if r := newPoster(t, "", 2).post(t, room, "alice", "I am alice", ""); r.status != http.StatusCreated || r.json["verified"] != false {
		t.Errorf("anonymous alice with reserve_names off: %d %s, want 201, unverified", r.status, r.body)
	}
}

// TestIdentityRequired: with required, a post whose identity resolves
// empty is refused with 401 and stores nothing, not even the room; signed-in
// posts and anonymous reads go on.
func TestIdentityRequired(t *testing.T) {
	startCaddy(t, trustConfig(t, "", "identity {http.auth.user.id} required"))
	room := roomFor(t, "a")
	before := metric(t, `caddy_chat_rejected_requests_total{reason="unauthorized"}`)
	refused(t, "anonymous alice", newPoster(t, "", 2).post(t, room, "alice", "let me in", ""), http.StatusUnauthorized)
	if got := metric(t, `caddy_chat_rejected_requests_total{reason="unauthorized"}`) - before; got != 1 {
		t.Errorf("unauthorized counted %v times, want 1", got)
	}
	if resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", ""); resp.status != http.StatusNotFound {
		t.Errorf("the room after a refused post: %d %s, want 404", resp.status, resp.body)
	}
	if r := newPoster(t, "alice", 3).post(t, room, "", "signed in", ""); r.status != http.StatusCreated || r.json["verified"] != true {
		t.Errorf("alice signed in: %d %s, want 201, verified", r.status, r.body)
	}
	if got, want := history(t, room), "alice:signed in:true"; got != want {
		t.Errorf("history %s, want %s", got, want)
	}
}

// TestKeysScopedToAuthor: one Idempotency-Key, used by authors who do not
// know of each other (two names behind one address, one name from two
// addresses, a signed-in user), stores every message; each author's repeat
// gets their own message back, and their key with another message is
// refused with 409 and stores nothing.
func TestKeysScopedToAuthor(t *testing.T) {
	startCaddy(t, trustConfig(t, "", ""))
	room := roomFor(t, "a")
	here, there, alice := newPoster(t, "", 2), newPoster(t, "", 4), newPoster(t, "alice", 2)
	first := here.post(t, room, "carol", "hello", "k1")
	for _, r := range []response{
		first,
		here.post(t, room, "dave", "hello", "k1"),
		there.post(t, room, "carol", "hello", "k1"),
		alice.post(t, room, "", "hello", "k1"),
	} {
		if r.status != http.StatusCreated {
			t.Fatalf("a post with another author's key: %d %s, want 201", r.status, r.body)
		}
	}
	if again := here.post(t, room, "carol", "hello", "k1"); again.status != http.StatusOK || again.body != first.body {
		t.Errorf("carol's repeat: %d %s, want 200 and %s", again.status, again.body, first.body)
	}
	before := metric(t, `caddy_chat_rejected_requests_total{reason="key_reused"}`)
	refused(t, "carol's key with other text", here.post(t, room, "carol", "hello, edited", "k1"), http.StatusConflict)
	refused(t, "alice's key with other text", alice.post(t, room, "", "goodbye", "k1"), http.StatusConflict)
	if got := metric(t, `caddy_chat_rejected_requests_total{reason="key_reused"}`) - before; got != 2 {
		t.Errorf("key_reused counted %v times, want 2", got)
	}
	want := "carol:hello:false,dave:hello:false,carol:hello:false,alice:hello:true"
	if got := history(t, room); got != want {
		t.Errorf("history %s, want %s", got, want)
	}
}

// TestRetryAtRateLimit: a client at its rate limit that retries a post
// already stored gets it back with 200, not 429; its key with another
// message is still a 409; only a new post is limited.
func TestRetryAtRateLimit(t *testing.T) {
	startCaddy(t, trustConfig(t, "rate_limit 1 1m", "rate_limit 2 1m"))
	room := roomFor(t, "a")
	anon, alice := newPoster(t, "", 2), newPoster(t, "alice", 3)
	one, two := anon.post(t, room, "carol", "one", "a"), anon.post(t, room, "carol", "two", "b")
	signed := alice.post(t, room, "", "signed", "s")
	if one.status != http.StatusCreated || two.status != http.StatusCreated || signed.status != http.StatusCreated {
		t.Fatalf("posts within the limit: %d, %d, %d; want 201", one.status, two.status, signed.status)
	}
	refused(t, "a new post past the limit", anon.post(t, room, "carol", "three", "c"), http.StatusTooManyRequests)
	refused(t, "alice's new post past her limit", alice.post(t, room, "", "more", "t"), http.StatusTooManyRequests)
	for _, retry := range []struct {
		name  string
		got   response
		first response
	}{
		{"retry of the second post", anon.post(t, room, "carol", "two", "b"), two},
		{"retry of the first post", anon.post(t, room, "carol", "one", "a"), one},
		{"alice's retry", alice.post(t, room, "", "signed", "s"), signed},
	} {
		if retry.got.status != http.StatusOK || retry.got.body != retry.first.body {
			t.Errorf("%s at the limit: %d %s, want 200 and %s", retry.name, retry.got.status, retry.got.body, retry.first.body)
		}
	}
	refused(t, "a reused key past the limit", anon.post(t, room, "carol", "other", "b"), http.StatusConflict)
	if got, want := history(t, room), "carol:one:false,carol:two:false,alice:signed:true"; got != want {
		t.Errorf("history %s, want %s", got, want)
	}
}

// TestIdentityRequiredNeedsIdentity: required without a placeholder would
// refuse every post; the config says so instead.
func TestIdentityRequiredNeedsIdentity(t *testing.T) {
	h := Handler{IdentityRequired: true}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "identity_required needs an identity") {
		t.Errorf("Validate: %v, want an error about the missing identity", err)
	}
}

// TestOtherOriginIsNeverVerified: a page on an origin that allow_origins lets
// in may send the chat site's credentials along (a form post needs no
// preflight); such a post is stored, but never as the signed-in user.
func TestOtherOriginIsNeverVerified(t *testing.T) {
	startCaddy(t, trustConfig(t, "allow_origins https://other.example", ""))
	room := roomFor(t, "a")
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))
	post := func(headers ...string) response {
		body := fmt.Sprintf(`{"room":%q,"user":"carol","message":"hi"}`, room)
		return do(t, "POST", rootSite+"/auth/submit", body, append([]string{"Content-Type", ctJSON, "Authorization", auth}, headers...)...)
	}
	if r := post(); r.status != http.StatusCreated || r.json["user"] != "alice" || r.json["verified"] != true {
		t.Fatalf("alice from the site itself: %d %s, want 201 verified as alice", r.status, r.body)
	}
	if r := post("Origin", "https://other.example"); r.status != http.StatusCreated || r.json["user"] != "carol" || r.json["verified"] != false {
		t.Errorf("alice's credentials from another origin: %d %s, want 201 unverified as the claimed carol", r.status, r.body)
	}
}
