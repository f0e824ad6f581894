package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/internal/tokentest"
	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
)

// privateRooms is the pattern of the tests' private rooms: the names that
// privateRoom gives.
const privateRooms = "*-priv-*"

// privateRoom names a new private room for the test.
func privateRoom(t *testing.T) string { return roomFor(t, "priv") }

// tokenConfig verifies tokens with key, an option of the token block such
// as "key hs256 {env.CHAT_TOKEN_SECRET}", with privateRooms private, over
// HTTP/1.1 and h2c, with gRPC on.
func tokenConfig(key string, more ...string) config {
	return config{
		options: "servers {\n\t\tprotocols h1 h2c\n\t}",
		handler: fmt.Sprintf("grpc on\n\t\ttoken {\n\t\t\t%s\n\t\t\taudience chat\n\t\t}\n\t\tprivate %s\n\t\t%s", key, privateRooms, strings.Join(more, "\n\t\t")),
	}
}

// hs256Config verifies HS256 tokens signed with tokentest.Secret, read
// from the environment as a site keeps its secret.
func hs256Config(t testing.TB) config {
	t.Setenv("CHAT_TEST_TOKEN_SECRET", tokentest.Secret)
	return tokenConfig("key hs256 {env.CHAT_TEST_TOKEN_SECRET}")
}

// jwksConfig verifies tokens with the keys srv serves, trusting its CA
// written to dir, for the issuer and audience that signed gives.
func jwksConfig(t testing.TB, srv *tokentest.JWKSServer, dir string) config {
	return tokenConfig("jwks " + srv.URL() + "\n\t\t\tjwks_ca " + srv.CAFile(t, dir) + "\n\t\t\tissuer " + testIssuer)
}

// testIssuer is the iss of the tokens that signed signs.
const testIssuer = "https://auth.example.com/"

// signed signs a token for user with grants, valid for ttl, from
// testIssuer for the chat audience.
func signed(t testing.TB, s *tokentest.Signer, user string, ttl time.Duration, grants map[string][]string) string {
	t.Helper()
	c := tokentest.Claims(user, ttl, grants)
	c["aud"], c["iss"] = "chat", testIssuer
	return s.Sign(t, c)
}

// bearer is the header pair that sends tok.
func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// h2cClient speaks HTTP/2 without TLS.
func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: wait}
}

// getWith answers a GET of url through c, with headers.
func getWith(t *testing.T, c *http.Client, url string, headers ...string) response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	_ = json.NewDecoder(resp.Body).Decode(&r.json)
	r.body = fmt.Sprint(r.json)
	return r
}

// refusedFor fails t unless r is a JSON refusal with status and reason.
func refusedFor(t *testing.T, what string, r response, status int, reason string) {
	t.Helper()
	refused(t, what, r, status)
	if r.json["reason"] != reason {
		t.Fatalf("%s: %d %v, want the reason %s", what, r.status, r.json, reason)
	}
}

// postAs submits message to room on base with headers, claiming user
// mallory.
func postAs(t *testing.T, base, room, message string, headers ...string) response {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"room": room, "user": "mallory", "message": message})
	return do(t, "POST", base+"/submit", string(body), append([]string{"Content-Type", ctJSON}, headers...)...)
}

// listed reports whether GET /rooms lists room for a caller with headers.
func listed(t *testing.T, base, room string, headers ...string) bool {
	t.Helper()
	r := do(t, "GET", base+"/rooms", "", headers...)
	if r.status != http.StatusOK {
		t.Fatalf("GET /rooms: %d %s", r.status, r.body)
	}
	return strings.Contains(r.body, `"name":"`+room+`"`)
}

// TestTokenGrantsByPattern: with a key of each algorithm, a token's user
// is the verified author whatever the request claims, its read grant by
// pattern opens private rooms' streams, history and presence, and the
// listing; its post grant, posts to exactly the rooms it names. Rooms
// outside private are public as before.
func TestTokenGrantsByPattern(t *testing.T) {
	defer reload(t, config{})
	dir := t.TempDir()
	for _, alg := range []string{"hs256", "rs256", "es256", "eddsa"} {
		t.Run(alg, func(t *testing.T) {
			s := tokentest.NewSigner(t, alg, "")
			cfg := hs256Config(t)
			if alg != "hs256" {
				cfg = tokenConfig("key " + alg + " " + s.WritePublicPEM(t, dir))
			}
			startCaddy(t, cfg)
			readable, writable, public := privateRoom(t), privateRoom(t), roomFor(t, "pub")
			tok := signed(t, s, "alice", time.Minute, map[string][]string{"read": {privateRooms}, "post": {writable}})
			auth := bearer(tok)

			if r := postAs(t, rootSite, writable, "hello", auth...); r.status != http.StatusCreated || r.json["user"] != "alice" || r.json["verified"] != true {
				t.Fatalf("post with the grant: %d %s, want 201 by alice, verified", r.status, r.body)
			}
			refusedFor(t, "post without the post grant", postAs(t, rootSite, readable, "x", auth...), http.StatusForbidden, "no_grant")
			if r := postAs(t, rootSite, public, "to the public"); r.status != http.StatusCreated || r.json["verified"] == true {
				t.Fatalf("anonymous post to a public room: %d %s", r.status, r.body)
			}
			if r := postAs(t, chatBase, public, "signed in", auth...); r.json["user"] != "alice" || r.json["verified"] != true {
				t.Fatalf("post with a token to a public room, under /chat: %d %s, want alice, verified", r.status, r.body)
			}

			st := openStream(t, rootSite+"/stream/"+writable+"?history=5", auth...)
			if got := st.messages(t, 1); got[0].Message != "hello" {
				t.Fatalf("the private room's replay: %v", got)
			}
			st.close()
			for _, path := range []string{"/rooms/" + writable + "/messages", "/rooms/" + writable + "/presence"} {
				if r := do(t, "GET", chatBase+path, "", auth...); r.status != http.StatusOK {
					t.Fatalf("GET %s with the read grant: %d %s", path, r.status, r.body)
				}
				refusedFor(t, "GET "+path+" without a token", do(t, "GET", chatBase+path, ""), http.StatusUnauthorized, "token_missing")
			}
			if !listed(t, rootSite, writable, auth...) || listed(t, rootSite, writable) || !listed(t, rootSite, public) {
				t.Fatal("GET /rooms: a private room must be listed to its readers only, a public one to all")
			}
			// The room page renders for anyone, its history only for a
			// reader: the page's script signs in to stream it.
			if r := do(t, "GET", rootSite+"/room/"+writable, ""); r.status != http.StatusOK || strings.Contains(r.body, "hello") {
				t.Fatalf("the private room's page without a token: %d, showing its history: %v", r.status, strings.Contains(r.body, "hello"))
			}
			if r := do(t, "GET", rootSite+"/room/"+writable, "", auth...); !strings.Contains(r.body, "hello") {
				t.Fatalf("the private room's page with the read grant: %d, without its history", r.status)
			}
		})
	}
}

// TestTokenRefusalsSayWhy: each refusal, over HTTP/1.1 and HTTP/2, has
// its status, its reason in the JSON, and a Bearer challenge; a token for
// another audience or issuer, alg none, and HS256 signed with the RSA
// public key are refused as invalid, saying what failed.
func TestTokenRefusalsSayWhy(t *testing.T) {
	defer reload(t, config{})
	dir := t.TempDir()
	rsa := tokentest.NewSigner(t, "rs256", "")
	cfg := tokenConfig("key rs256 " + rsa.WritePublicPEM(t, dir) + "\n\t\t\tissuer https://auth.example.com/")
	startCaddy(t, cfg)
	room := privateRoom(t)
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := tokentest.Claims("alice", time.Minute, map[string][]string{"read": {"other-*"}})
		c["aud"], c["iss"] = "chat", "https://auth.example.com/"
		if edit != nil {
			edit(c)
		}
		return c
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil)).SignedString(rsa.PublicPEM(t))
	cases := []struct {
		name   string
		token  string
		status int
		reason string
		why    string
	}{
		{"no token", "", http.StatusUnauthorized, "token_missing", ""},
		{"no grant", rsa.Sign(t, claims(nil)), http.StatusForbidden, "no_grant", ""},
		{"expired", rsa.Sign(t, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), http.StatusUnauthorized, "token_expired", ""},
		{"another key", tokentest.NewSigner(t, "rs256", "").Sign(t, claims(nil)), http.StatusUnauthorized, "token_invalid", "signature"},
		{"another audience", rsa.Sign(t, claims(func(c jwt.MapClaims) { c["aud"] = "billing" })), http.StatusUnauthorized, "token_invalid", "audience"},
		{"another issuer", rsa.Sign(t, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com/" })), http.StatusUnauthorized, "token_invalid", "issuer"},
		{"alg none", none, http.StatusUnauthorized, "token_invalid", "algorithm"},
		{"HS256 with the RSA public key", confused, http.StatusUnauthorized, "token_invalid", "algorithm"},
	}
	for _, proto := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1.1", client}, {"HTTP/2", h2cClient(t)}} {
		for _, c := range cases {
			var headers []string
			if c.token != "" {
				headers = bearer(c.token)
			}
			r := getWith(t, proto.client, rootSite+"/stream/"+room, headers...)
			what := proto.name + " " + c.name
			refusedFor(t, what, r, c.status, c.reason)
			if r.json["why"] != nil && r.json["why"] != c.why || c.why != "" && r.json["why"] != c.why {
				t.Errorf("%s: why %v, want %q", what, r.json["why"], c.why)
			}
			if c.reason == "no_grant" && r.json["room"] != room {
				t.Errorf("%s: room %v, want %s", what, r.json["room"], room)
			}
			if challenge := r.header.Get("WWW-Authenticate"); c.status == http.StatusUnauthorized && !strings.HasPrefix(challenge, "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, challenge)
			}
		}
	}
	// A token that is sent must verify, in public rooms too: its holder
	// believes to be signed in.
	refusedFor(t, "an expired token in a public room", postAs(t, rootSite, roomFor(t, "pub"), "x", bearer(cases[2].token)...), http.StatusUnauthorized, "token_expired")
}

// TestTokenExpiryEndsStream: a stream opened with a token ends at its exp
// with event: expired, over HTTP/1.1 (relayed) and HTTP/2 (in the request
// path); the client comes back with a fresh token and Last-Event-ID and
// loses nothing posted meanwhile.
func TestTokenExpiryEndsStream(t *testing.T) {
	defer reload(t, config{})
	startCaddy(t, hs256Config(t))
	s := tokentest.NewSigner(t, "hs256", "")
	for _, proto := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1.1", http.DefaultClient}, {"HTTP/2", h2cClient(t)}} {
		t.Run(proto.name, func(t *testing.T) {
			room := privateRoom(t)
			grants := map[string][]string{"read": {room}, "post": {room}}
			// exp is in whole seconds: 2 s from now is 1 to 2 s away.
			st := openStreamWith(t, proto.client, rootSite+"/stream/"+room, bearer(signed(t, s, "alice", 2*time.Second, grants))...)
			fresh := bearer(signed(t, s, "bob", time.Minute, grants))
			first := postAs(t, rootSite, room, "before expiry", fresh...)
			if got := st.messages(t, 1); got[0].ID != first.json["id"] {
				t.Fatalf("live: %v", got)
			}
			evs := st.endWithin(t, 3*time.Second)
			if len(evs) != 1 || evs[0].Name != "expired" {
				t.Fatalf("the stream ended with %v, want event: expired", evs)
			}
			second := postAs(t, rootSite, room, "after expiry", fresh...)
			again := openStreamWith(t, proto.client, rootSite+"/stream/"+room, append(fresh, "Last-Event-ID", first.json["id"].(string))...)
			if got := again.messages(t, 1); got[0].ID != second.json["id"] {
				t.Fatalf("resumed with a fresh token: %v, want %v", got, second.json["id"])
			}
		})
	}
}

// TestTokenJWKS: keys from a JWKS served over HTTPS: a rotation's new key
// id is fetched at once and the removed key stops verifying; while the
// JWKS server hangs, tokens of cached keys verify without waiting.
func TestTokenJWKS(t *testing.T) {
	defer reload(t, config{})
	k1, k2 := tokentest.NewSigner(t, "rs256", "k1"), tokentest.NewSigner(t, "es256", "k2")
	srv := tokentest.NewJWKSServer(t, k1)
	startCaddy(t, jwksConfig(t, srv, t.TempDir()))
	room := privateRoom(t)
	grants := map[string][]string{"read": {room}, "post": {room}}
	path := rootSite + "/rooms/" + room + "/messages"
	if r := postAs(t, rootSite, room, "hi", bearer(signed(t, k1, "alice", time.Minute, grants))...); r.status != http.StatusCreated {
		t.Fatalf("a token of the JWKS's key: %d %s", r.status, r.body)
	}
	srv.SetKeys(k2)
	if r := do(t, "GET", path, "", bearer(signed(t, k2, "alice", time.Minute, grants))...); r.status != http.StatusOK {
		t.Fatalf("a token of the rotated key: %d %s", r.status, r.body)
	}
	r := do(t, "GET", path, "", bearer(signed(t, k1, "alice", time.Minute, grants))...)
	refusedFor(t, "a token of the removed key", r, http.StatusUnauthorized, "token_invalid")

	srv.Hang()
	for range 10 {
		start := time.Now()
		if r := do(t, "GET", path, "", bearer(signed(t, k2, "alice", time.Minute, grants))...); r.status != http.StatusOK {
			t.Fatalf("a cached key with the JWKS server hung: %d %s", r.status, r.body)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("a cached key with the JWKS server hung took %v", d)
		}
	}
}

// TestTokenGRPC: over gRPC the token comes in the authorization metadata,
// with the same grants, and the same refusals as gRPC codes with their
// reason; a stream ends at the token's exp as Unauthenticated.
func TestTokenGRPC(t *testing.T) {
	defer reload(t, config{})
	startCaddy(t, hs256Config(t))
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	c := grpcClient(rootSite)
	tok := signed(t, s, "alice", 2*time.Second, map[string][]string{"read": {privateRooms}, "post": {room}})

	st := openRPCStream(t, c, &chatv1.StreamRequest{Room: room}, bearer(tok)...)
	req := connect.NewRequest(&chatv1.SubmitRequest{Room: room, User: "mallory", Message: "over gRPC"})
	req.Header().Set("Authorization", "Bearer "+tok)
	resp, err := c.Submit(callCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.User != "alice" || !resp.Msg.Verified {
		t.Fatalf("submit with a token: %v, want alice, verified", resp.Msg)
	}
	if ev := st.next(t); ev.GetMessage().GetId() != resp.Msg.Id {
		t.Fatalf("stream: %v", ev)
	}
	codeOf := func(err error) (connect.Code, string) {
		var cerr *connect.Error
		if !errors.As(err, &cerr) {
			t.Fatalf("%v is no gRPC error", err)
		}
		for _, d := range cerr.Details() {
			if v, err := d.Value(); err == nil {
				if info, ok := v.(*errdetails.ErrorInfo); ok {
					return cerr.Code(), info.Reason
				}
			}
		}
		return cerr.Code(), ""
	}
	if code, reason := codeOf(st.end(t, 3*time.Second)); code != connect.CodeUnauthenticated || reason != "token_expired" {
		t.Fatalf("the stream ended at exp with %v %s, want Unauthenticated token_expired", code, reason)
	}
	_, err = c.History(callCtx(t), connect.NewRequest(&chatv1.HistoryRequest{Room: room}))
	if code, reason := codeOf(err); code != connect.CodeUnauthenticated || reason != "token_missing" {
		t.Fatalf("history without a token: %v %s", code, reason)
	}
	req = connect.NewRequest(&chatv1.SubmitRequest{Room: privateRoom(t), Message: "x"})
	req.Header().Set("Authorization", "Bearer "+signed(t, s, "alice", time.Minute, map[string][]string{"read": {"*"}}))
	_, err = c.Submit(callCtx(t), req)
	if code, reason := codeOf(err); code != connect.CodePermissionDenied || reason != "no_grant" {
		t.Fatalf("submit without the post grant: %v %s", code, reason)
	}
	list := connect.NewRequest(&chatv1.ListRoomsRequest{})
	rooms, err := c.ListRooms(callCtx(t), list)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rooms.Msg.Rooms {
		if r.Name == room {
			t.Fatal("ListRooms without a token lists a private room")
		}
	}
}

// TestTokenModeratorBansAndDeletes: on a mount without moderate, a caller
// whose token grants moderating a private room bans an author there by
// message, with purge: a reader's stream sees the author's messages
// deleted, history keeps none of them, and the author's posts are refused
// as banned until the moderator lifts the ban. The grant is for that room
// alone, and a member without it moderates nothing.
func TestTokenModeratorBansAndDeletes(t *testing.T) {
	defer reload(t, config{})
	startCaddy(t, hs256Config(t))
	s := tokentest.NewSigner(t, "hs256", "")
	room, other := privateRoom(t), privateRoom(t)
	member := bearer(signed(t, s, "bob", time.Minute, map[string][]string{"read": {privateRooms}, "post": {privateRooms}}))
	mod := bearer(signed(t, s, "carol", time.Minute, map[string][]string{"read": {privateRooms}, "moderate": {room}}))
	asJSON := func(headers []string) []string { return append(slices.Clip(headers), "Content-Type", ctJSON) }

	reader := openStream(t, rootSite+"/stream/"+room, member...)
	spam := []response{postAs(t, rootSite, room, "buy now", member...), postAs(t, rootSite, room, "buy more", member...)}
	for _, r := range spam {
		if r.status != http.StatusCreated {
			t.Fatalf("bob's post: %d %s", r.status, r.body)
		}
	}
	reader.messages(t, 2)

	bans := rootSite + "/rooms/" + room + "/bans"
	ban := fmt.Sprintf(`{"message":%q,"for":"1h","purge":true}`, spam[1].json["id"])
	refused(t, "a member without the moderate grant bans", do(t, "POST", bans, ban, asJSON(member)...), http.StatusForbidden)
	refused(t, "the moderator bans in a room outside the grant", do(t, "POST", rootSite+"/rooms/"+other+"/bans", `{"user":"bob"}`, asJSON(mod)...), http.StatusForbidden)
	put := do(t, "POST", bans, ban, asJSON(mod)...)
	if put.status != http.StatusCreated || put.json["user"] != "bob" || put.json["by"] != "carol" {
		t.Fatalf("the token moderator's ban: %d %s, want 201, bob banned by carol", put.status, put.body)
	}
	deleted := map[string]bool{}
	for range spam {
		ev := reader.next(t)
		var del struct {
			Target string `json:"target"`
			By     string `json:"by"`
		}
		if ev.Name != "delete" || json.Unmarshal([]byte(ev.Data), &del) != nil || del.By != "moderator" {
			t.Fatalf("the reader's stream: %s %s, want a moderator's delete", ev.Name, ev.Data)
		}
		deleted[del.Target] = true
	}
	for _, r := range spam {
		if !deleted[r.json["id"].(string)] {
			t.Errorf("message %v was not deleted: %v", r.json["id"], deleted)
		}
	}
	if got := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "", mod...); got.status != http.StatusOK || strings.Contains(got.body, "buy") {
		t.Errorf("history after the purge: %d %s, want none of bob's messages", got.status, got.body)
	}
	refusedFor(t, "bob's post while banned", postAs(t, rootSite, room, "hello?", member...), http.StatusForbidden, "banned")

	list := do(t, "GET", bans, "", mod...)
	if listed, _ := list.json["bans"].([]any); list.status != http.StatusOK || len(listed) != 1 {
		t.Fatalf("the moderator's list of bans: %d %s, want bob's ban", list.status, list.body)
	}
	if r := do(t, "DELETE", bans+"/"+put.json["id"].(string), "", mod...); r.status != http.StatusNoContent {
		t.Fatalf("the moderator lifts the ban: %d %s", r.status, r.body)
	}
	if r := postAs(t, rootSite, room, "back", member...); r.status != http.StatusCreated {
		t.Errorf("bob's post after the ban was lifted: %d %s", r.status, r.body)
	}
}

// TestTokenPagingNeedsRead: paging back through a private room's history
// (before=) needs the read grant as its newest page does: refused without
// a token, and with one that does not grant reading the room.
func TestTokenPagingNeedsRead(t *testing.T) {
	defer reload(t, config{})
	startCaddy(t, hs256Config(t))
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	member := bearer(signed(t, s, "bob", time.Minute, map[string][]string{"read": {room}, "post": {room}}))
	outsider := bearer(signed(t, s, "eve", time.Minute, map[string][]string{"read": {"other-*"}, "post": {room}}))
	var ids []string
	for _, text := range []string{"first", "second", "third"} {
		r := postAs(t, rootSite, room, text, member...)
		if r.status != http.StatusCreated {
			t.Fatalf("post %s: %d %s", text, r.status, r.body)
		}
		ids = append(ids, r.json["id"].(string))
	}
	page := rootSite + "/rooms/" + room + "/messages?limit=1&before=" + ids[2]
	refusedFor(t, "a page back without a token", do(t, "GET", page, ""), http.StatusUnauthorized, "token_missing")
	refusedFor(t, "a page back with a token that may post but not read", do(t, "GET", page, "", outsider...), http.StatusForbidden, "no_grant")
	r := do(t, "GET", page, "", member...)
	msgs, _ := r.json["messages"].([]any)
	if r.status != http.StatusOK || len(msgs) != 1 || msgs[0].(map[string]any)["message"] != "second" {
		t.Fatalf("a page back with the read grant: %d %s, want the second message", r.status, r.body)
	}
}

// TestTokenTwoRedisNodes: two nodes sharing rooms through Redis verify
// the same token each on its own, with the same answers.
func TestTokenTwoRedisNodes(t *testing.T) {
	srv := redistest.Start(t)
	cfg := hs256Config(t)
	cfg.global = redisGlobal(srv)
	startCaddy(t, cfg)
	defer reload(t, config{})
	b, _ := startRedisNode(t, srv.URL(), "token {\n\t\t\tkey hs256 {env.CHAT_TEST_TOKEN_SECRET}\n\t\t\taudience chat\n\t\t}", "private "+privateRooms)
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	auth := bearer(signed(t, s, "alice", time.Minute, map[string][]string{"read": {room}, "post": {room}}))
	onB := openStream(t, b+"/stream/"+room, auth...)
	posted := postAs(t, rootSite, room, "from A", auth...)
	if got := onB.messages(t, 1); got[0].ID != posted.json["id"] || got[0].User != "alice" {
		t.Fatalf("on B: %v, want alice's post on A", got)
	}
	for _, node := range []string{rootSite, b} {
		refusedFor(t, node+" without a token", do(t, "GET", node+"/rooms/"+room+"/messages", ""), http.StatusUnauthorized, "token_missing")
		refusedFor(t, node+" with another's token", do(t, "GET", node+"/rooms/"+room+"/messages", "", bearer(signed(t, s, "bob", time.Minute, map[string][]string{"read": {"x"}}))...), http.StatusForbidden, "no_grant")
		if listed(t, node, room) || !listed(t, node, room, auth...) {
			t.Fatalf("%s lists the private room to the wrong callers", node)
		}
	}
}

// TestTokenConfigRefused: a config that could not verify tokens safely
// does not load, and says why, without the secret.
func TestTokenConfigRefused(t *testing.T) {
	pem := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(pem, tokentest.NewSigner(t, "rs256", "").PublicPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAT_TEST_SHORT_SECRET", "short-secret")
	for _, c := range []struct {
		name string
		cfg  config
		want string
	}{
		{"private without a token", config{handler: "private team-*"}, "private needs a token block"},
		{"key and jwks", tokenConfig("key hs256 x\n\t\t\tjwks https://example.com/jwks.json"), "exclude each other"},
		{"jwks over http", tokenConfig("jwks http://example.com/jwks.json"), "want an https URL"},
		{"jwks without issuer", tokenConfig("jwks https://example.com/jwks.json"), "jwks needs issuer and audience"},
		{"unknown algorithm", tokenConfig("key hs512 x"), "unknown algorithm"},
		{"RSA key as es256", tokenConfig("key es256 " + pem), "a key for RS256"},
		{"a short secret", tokenConfig("key hs256 {env.CHAT_TEST_SHORT_SECRET}"), "32 or more"},
		{"an unset secret", tokenConfig("key hs256 {env.CHAT_TEST_UNSET_SECRET}"), "{env.CHAT_TEST_UNSET_SECRET} is empty"},
		{"bad source", tokenConfig("key hs256 x\n\t\t\tfrom header body"), `from "body"`},
		{"bad pattern", config{handler: "private team/a"}, "not a room pattern"},
	} {
		t.Run(c.name, func(t *testing.T) {
			refusesToLoad(t, c.cfg, c.name, c.want)
		})
	}
	if err := loadCaddyfile(tokenConfig("key hs256 {env.CHAT_TEST_SHORT_SECRET}").String()); err == nil || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("the refusal of a short secret: %v; it must not quote the secret", err)
	}
}

// accessLogRedactsToken is the site's access log format that README
// shows: Caddy's filter deletes the token from the query of every entry.
const accessLogRedactsToken = `filter {
			wrap json
			request>uri query {
				delete access_token
			}
		}`

// TestTokenInQueryLeavesNoTrace: a page's stream sends its token in the
// query, as EventSource sends no headers; over HTTP/1.1 and HTTP/2 with
// TLS, the stream ends at the token's exp with its own access-log entry,
// and the log filter of README keeps the token out of it.
func TestTokenInQueryLeavesNoTrace(t *testing.T) {
	defer reload(t, config{})
	dir := t.TempDir()
	t.Setenv("CHAT_TEST_TOKEN_SECRET", tokentest.Secret)
	startSite(t, site{dir: dir, format: accessLogRedactsToken,
		handler: "token {\n\t\t\tkey hs256 {env.CHAT_TEST_TOKEN_SECRET}\n\t\t}\n\t\tprivate " + privateRooms})
	s := tokentest.NewSigner(t, "hs256", "")
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			room := privateRoom(t)
			tok := s.Sign(t, tokentest.Claims("alice", 2*time.Second, map[string][]string{"read": {room}}))
			st := openStreamWith(t, siteClient(t, proto), "https://"+siteAddr+"/stream/"+room+"?access_token="+tok)
			if evs := st.endWithin(t, 3*time.Second); len(evs) != 1 || evs[0].Name != "expired" {
				t.Fatalf("the stream ended with %v, want event: expired", evs)
			}
			entry := waitStreamEntry(t, filepath.Join(dir, "access.log"), room)
			req, _ := entry["request"].(map[string]any)
			if entry["end"] != "token_expired" || req["uri"] != "/stream/"+room {
				t.Fatalf("access log entry: end %v, uri %v; want token_expired and the uri without its token", entry["end"], req["uri"])
			}
		})
	}
	b, err := os.ReadFile(filepath.Join(dir, "access.log"))
	if err != nil || strings.Contains(string(b), tokentest.Secret[:8]) || strings.Contains(string(b), "access_token=ey") {
		t.Fatalf("the access log holds a token or the secret (%v)", err)
	}
}

// BenchmarkSubmitWithToken posts through the in-process Caddy over
// HTTP/1.1, without a token and with an HS256 or ES256 one, and reports
// the process's CPU per post, client included: the difference is what
// verifying costs a submit (see BENCHMARKS.md).
func BenchmarkSubmitWithToken(b *testing.B) {
	dir := b.TempDir()
	defer loadCaddyfile(config{}.String())
	for _, alg := range []string{"none", "hs256", "es256"} {
		b.Run(alg, func(b *testing.B) {
			cfg := hs256Config(b)
			var headers http.Header = http.Header{"Content-Type": {ctJSON}}
			room := fmt.Sprintf("bench-%s-%s", alg, testRun.id)
			if alg != "none" {
				s := tokentest.NewSigner(b, alg, "")
				if alg == "es256" {
					cfg = tokenConfig("key es256 " + s.WritePublicPEM(b, dir))
				}
				room = fmt.Sprintf("bench-priv-%s-%s", alg, testRun.id)
				headers.Set("Authorization", "Bearer "+signed(b, s, "alice", time.Hour, map[string][]string{"post": {room}}))
			}
			if err := loadCaddyfile(cfg.String()); err != nil {
				b.Fatal(err)
			}
			caddyStarted = true
			body := []byte(fmt.Sprintf(`{"room":%q,"user":"bob","message":"hi"}`, room))
			post := func() {
				req, _ := http.NewRequest("POST", rootSite+"/submit", bytes.NewReader(body))
				req.Header = headers.Clone()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					b.Fatalf("submit: %d", resp.StatusCode)
				}
			}
			post() // the room exists before the clock starts
			var before, after syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			for b.Loop() {
				post()
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := time.Duration(syscall.TimevalToNsec(after.Utime) + syscall.TimevalToNsec(after.Stime) -
				syscall.TimevalToNsec(before.Utime) - syscall.TimevalToNsec(before.Stime))
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// TestPrivateOnEveryMount: a room that one handler names private is
// private on every chat mount of the config, which all serve the same
// rooms: a mount without a token block, here /mod/ with its signed-in
// moderators, refuses its stream, history, presence and posts with 401
// token_missing, lists it to no one, and its moderators cannot ban there.
func TestPrivateOnEveryMount(t *testing.T) {
	defer reload(t, config{})
	cfg := hs256Config(t)
	cfg.site = moderatedSite(t, false, "")
	startCaddy(t, cfg)
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	member := bearer(signed(t, s, "alice", time.Minute, map[string][]string{"read": {room}, "post": {room}}))
	if r := postAs(t, rootSite, room, "secret plan", member...); r.status != http.StatusCreated {
		t.Fatalf("a member's post: %d %s", r.status, r.body)
	}
	mod := rootSite + "/mod"
	admin := signedIn("admin")
	for _, path := range []string{"/rooms/" + room + "/messages", "/rooms/" + room + "/presence", "/stream/" + room} {
		r := getWith(t, client, mod+path, admin...)
		refusedFor(t, "GET "+path+" on a mount without tokens", r, http.StatusUnauthorized, "token_missing")
	}
	refusedFor(t, "a post on a mount without tokens", postAs(t, mod, room, "hi", admin...), http.StatusUnauthorized, "token_missing")
	if listed(t, mod, room, admin...) {
		t.Error("a mount without tokens lists the private room")
	}
	r := do(t, "POST", mod+"/rooms/"+room+"/bans", `{"user":"alice"}`, asUser("admin")...)
	refusedFor(t, "a mount moderator's ban in the private room", r, http.StatusUnauthorized, "token_missing")
	if r := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "", member...); r.status != http.StatusOK || !strings.Contains(r.body, "secret plan") {
		t.Fatalf("the member's history: %d %s", r.status, r.body)
	}
}

// TestDeletePrivateRoom: over HTTP and gRPC, deleting a private room
// takes a token that grants moderating it: without a token it is refused
// alike whether it exists or not, an expired token says so, and a
// member's token that may read and post is refused.
func TestDeletePrivateRoom(t *testing.T) {
	defer reload(t, config{})
	cfg := hs256Config(t)
	cfg.handler += "\n\t\tallow_delete"
	startCaddy(t, cfg)
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	member := bearer(signed(t, s, "alice", time.Minute, map[string][]string{"read": {privateRooms}, "post": {privateRooms}}))
	if r := postAs(t, rootSite, room, "plans", member...); r.status != http.StatusCreated {
		t.Fatalf("a member's post: %d %s", r.status, r.body)
	}
	expired := bearer(signed(t, s, "alice", -time.Hour, map[string][]string{"moderate": {privateRooms}}))
	refusedFor(t, "DELETE without a token", do(t, "DELETE", rootSite+"/room/"+room, ""), http.StatusUnauthorized, "token_missing")
	refusedFor(t, "DELETE of a room that does not exist, without a token", do(t, "DELETE", rootSite+"/room/"+privateRoom(t), ""), http.StatusUnauthorized, "token_missing")
	refusedFor(t, "DELETE with an expired token", do(t, "DELETE", rootSite+"/room/"+room, "", expired...), http.StatusUnauthorized, "token_expired")
	refusedFor(t, "DELETE with a member's token", do(t, "DELETE", rootSite+"/room/"+room, "", member...), http.StatusForbidden, "no_grant")

	req := connect.NewRequest(&chatv1.DeleteRoomRequest{Room: room})
	req.Header().Set("Authorization", member[1])
	if _, err := grpcClient(rootSite).DeleteRoom(callCtx(t), req); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("DeleteRoom with a member's token: %v, want PermissionDenied", err)
	}
	req.Header().Set("Authorization", "Bearer "+signed(t, s, "carol", time.Minute, map[string][]string{"moderate": {room}}))
	if _, err := grpcClient(rootSite).DeleteRoom(callCtx(t), req); err != nil {
		t.Fatalf("DeleteRoom with the moderate grant: %v", err)
	}
	if r := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "", member...); strings.Contains(r.body, "plans") {
		t.Fatalf("the room's history after its delete: %d %s", r.status, r.body)
	}
}

// TestTokenJWKSSurvivesReload: a reload while the JWKS server hangs keeps
// the keys fetched before: the reload waits for no fetch, and a token of a
// known key verifies at once after it.
func TestTokenJWKSSurvivesReload(t *testing.T) {
	defer reload(t, config{})
	k1 := tokentest.NewSigner(t, "es256", "k1")
	srv := tokentest.NewJWKSServer(t, k1)
	cfg := jwksConfig(t, srv, t.TempDir())
	startCaddy(t, cfg)
	room := privateRoom(t)
	auth := bearer(signed(t, k1, "alice", time.Minute, map[string][]string{"read": {room}, "post": {room}}))
	path := rootSite + "/rooms/" + room + "/messages"
	if r := postAs(t, rootSite, room, "hi", auth...); r.status != http.StatusCreated {
		t.Fatalf("before the reload: %d %s", r.status, r.body)
	}
	srv.Hang()
	cfg.global = "heartbeat 20s" // an unchanged config is not reloaded
	if took := reload(t, cfg); took > time.Second {
		t.Errorf("the reload with the JWKS server hung took %v", took)
	}
	start := time.Now()
	if r := do(t, "GET", path, "", auth...); r.status != http.StatusOK {
		t.Fatalf("a token of a key known before the reload: %d %s", r.status, r.body)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("a token of a key known before the reload took %v", took)
	}
}

// TestTokenJWKSReloadsLeaveNothing: a config that stops naming a JWKS
// ends its fetcher and closes its connections to the JWKS server: reloads
// back and forth leave no goroutine behind.
func TestTokenJWKSReloadsLeaveNothing(t *testing.T) {
	defer reload(t, config{})
	srv := tokentest.NewJWKSServer(t, tokentest.NewSigner(t, "es256", "k1"))
	jwks, plain := jwksConfig(t, srv, t.TempDir()), config{}
	startCaddy(t, jwks)
	reload(t, plain)
	settled := runtime.NumGoroutine()
	for range 10 {
		reload(t, jwks)
		reload(t, plain)
	}
	waitFor(t, "the goroutines of 10 JWKS fetchers to end", func() bool { return runtime.NumGoroutine() <= settled+5 })
}

// TestTokenPastExpRefusesStream: a token 10 s past its exp, within the
// leeway of clock skew, is refused a stream with 401 token_expired, over
// HTTP/1.1 and HTTP/2, rather than opening one that ends at once, which
// its reader would open again at once.
func TestTokenPastExpRefusesStream(t *testing.T) {
	defer reload(t, config{})
	startCaddy(t, hs256Config(t))
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	late := bearer(signed(t, s, "alice", -10*time.Second, map[string][]string{"read": {room}}))
	for _, proto := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1.1", client}, {"HTTP/2", h2cClient(t)}} {
		refusedFor(t, proto.name+" stream with a token 10 s past exp", getWith(t, proto.client, rootSite+"/stream/"+room, late...), http.StatusUnauthorized, "token_expired")
	}
}
