package chat

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// moderatedSite is the site directives of a chat with moderators, as the
// docs show it: /mod/ signs in the moderator admin and serves the chat
// with moderate on (and modMore). With members, everywhere else members
// bob, carol and dave sign in, to post verified through the site's own
// chat, which the caller adds with memberChat; without, the rest is
// public. /metrics is left to the site. All passwords are "secret".
func moderatedSite(t *testing.T, members bool, modMore string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	mod := fmt.Sprintf(`handle_path /mod/* {
		basic_auth {
			admin %[1]s
		}
		chat {
			identity {http.auth.user.id} required
			moderate
			%[2]s
		}
	}`, hash, modMore)
	if !members {
		return mod
	}
	return fmt.Sprintf(`@members not path /mod/* /metrics
	basic_auth @members {
		bob %[1]s
		carol %[1]s
		dave %[1]s
	}
	%[2]s`, hash, mod)
}

// memberChat is the subdirective of the members' chat of moderatedSite.
const memberChat = "identity {http.auth.user.id} required"

// signedIn is the header that signs login in with basic_auth.
func signedIn(login string) []string {
	return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(login+":secret"))}
}

// asUser is the headers of a JSON request by login.
func asUser(login string) []string {
	return append(signedIn(login), "Content-Type", ctJSON)
}

// moderatedNode runs the caddy binary with moderatedSite at a site of its
// own, the chat app's option store, its home in dir, and its admin
// endpoint at admin; it returns the site and caddy's exit.
func moderatedNode(t *testing.T, dir, admin, store string) (string, <-chan error) {
	t.Helper()
	site := "http://localhost:" + freePort()
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tchat {\n\t\t%s\n\t}\n}\n%s {\n\t%s\n\tchat {\n\t\t%s\n\t}\n}\n", admin, store, site, moderatedSite(t, true, ""), memberChat)
	return site, runBinary(t, dir, cfg, site)
}

// memberPost posts text to room on site as login.
func memberPost(t *testing.T, c *http.Client, site, room, login, text string) response {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"room": room, "message": text})
	return doWith(t, c, "POST", site+"/submit", string(body), asUser(login)...)
}

// banList is the bans GET /rooms/{room}/bans answers on a moderate mount.
func banList(t *testing.T, c *http.Client, mod, room string) []banView {
	t.Helper()
	r := doWith(t, c, "GET", mod+"/rooms/"+room+"/bans", "", signedIn("admin")...)
	var out struct {
		Bans []banView `json:"bans"`
	}
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &out) != nil {
		t.Fatalf("GET the bans of %s: %d %s", room, r.status, r.body)
	}
	return out.Bans
}

// TestModeratorBansAndUnbans: on an HTTPS site with an access log and
// compression, a moderator signed in under /mod/ bans a member by user
// name for an hour: the member's posts get 403 banned with Retry-After
// until it ends while others still post; the list shows the ban with its
// expiry and never the key it holds; a ban by message and a ban of every
// room hold their authors out; unbanning lets them post again. Each
// action is logged at INFO with who did it and counted.
func TestModeratorBansAndUnbans(t *testing.T) {
	dir := t.TempDir()
	startSite(t, site{dir: dir, site: moderatedSite(t, true, "") + "\n\thandle /metrics {\n\t\tmetrics\n\t}", handler: memberChat})
	c := siteClient(t, "HTTP/2.0")
	base := "https://" + siteAddr
	mod := base + "/mod"
	metrics := func(action string) float64 {
		return metricAt(t, c, base+"/metrics", `caddy_chat_moderation_total{action="`+action+`"}`)
	}
	bansBefore, unbansBefore := metrics("ban"), metrics("unban")
	room := roomFor(t, "mod")

	if r := memberPost(t, c, base, room, "bob", "spam"); r.status != http.StatusCreated || r.json["verified"] != true {
		t.Fatalf("bob's first post: %d %s", r.status, r.body)
	}
	r := doWith(t, c, "POST", mod+"/rooms/"+room+"/bans", `{"user":"bob","for":"1h","reason":"spam"}`, asUser("admin")...)
	if r.status != http.StatusCreated || r.json["id"] == "" || r.json["user"] != "bob" || r.json["by"] != "admin" || r.json["reason"] != "spam" {
		t.Fatalf("ban bob: %d %s", r.status, r.body)
	}
	if strings.Contains(r.body, "subject") || strings.Contains(r.body, "id:") || strings.Contains(r.body, "127.0.0.1") {
		t.Errorf("the ban's answer shows the key it holds: %s", r.body)
	}
	bobBan := r.json["id"].(string)
	expires, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r.json["expires"]))
	if err != nil || time.Until(expires) < 59*time.Minute || time.Until(expires) > time.Hour {
		t.Errorf("the ban expires %v (%v), want in an hour", r.json["expires"], err)
	}

	r = memberPost(t, c, base, room, "bob", "more spam")
	retry, _ := strconv.Atoi(r.header.Get("Retry-After"))
	if r.status != http.StatusForbidden || r.json["reason"] != "banned" || retry < 3500 || retry > 3600 {
		t.Errorf("bob's post while banned: %d Retry-After %q %s, want 403 banned with Retry-After of an hour", r.status, r.header.Get("Retry-After"), r.body)
	}
	carol := memberPost(t, c, base, room, "carol", "hello")
	if carol.status != http.StatusCreated {
		t.Fatalf("carol's post: %d %s", carol.status, carol.body)
	}
	if got := banList(t, c, mod, room); len(got) != 1 || got[0].ID != bobBan || got[0].User != "bob" || got[0].Expires == nil || !got[0].Expires.Equal(expires) {
		t.Errorf("the bans listed: %+v, want bob's, expiring %v", got, expires)
	}

	// By message, for ever: carol's message names her.
	r = doWith(t, c, "POST", mod+"/rooms/"+room+"/bans", fmt.Sprintf(`{"message":%q,"for":"forever"}`, carol.json["id"]), asUser("admin")...)
	if r.status != http.StatusCreated || r.json["user"] != "carol" || r.json["expires"] != nil {
		t.Fatalf("ban carol by her message, for ever: %d %s", r.status, r.body)
	}
	if r := memberPost(t, c, base, room, "carol", "again"); r.status != http.StatusForbidden || r.json["reason"] != "banned" || r.header.Get("Retry-After") != "" {
		t.Errorf("carol's post banned for ever: %d Retry-After %q %s, want 403 banned with no end", r.status, r.header.Get("Retry-After"), r.body)
	}
	// Every room: dave is out of a room he never posted in.
	r = doWith(t, c, "POST", mod+"/rooms/*/bans", `{"user":"dave","for":"7d"}`, asUser("admin")...)
	if r.status != http.StatusCreated || r.json["room"] != "*" {
		t.Fatalf("ban dave from every room: %d %s", r.status, r.body)
	}
	daveBan := r.json["id"].(string)
	other := roomFor(t, "other")
	if r := memberPost(t, c, base, other, "dave", "hi"); r.status != http.StatusForbidden || r.json["reason"] != "banned" {
		t.Errorf("dave's post in another room: %d %s, want 403 banned", r.status, r.body)
	}
	if got := banList(t, c, mod, "*"); len(got) != 1 || got[0].ID != daveBan || got[0].User != "dave" {
		t.Errorf("the bans of every room: %+v, want dave's", got)
	}
	if r := doWith(t, c, "DELETE", mod+"/rooms/*/bans/"+daveBan, "", signedIn("admin")...); r.status != http.StatusNoContent {
		t.Fatalf("unban dave from every room: %d %s", r.status, r.body)
	}
	if r := memberPost(t, c, base, other, "dave", "hi"); r.status != http.StatusCreated {
		t.Errorf("dave's post after the unban: %d %s", r.status, r.body)
	}

	r = doWith(t, c, "DELETE", mod+"/rooms/"+room+"/bans/"+bobBan, "", signedIn("admin")...)
	if r.status != http.StatusNoContent {
		t.Fatalf("unban bob: %d %s", r.status, r.body)
	}
	if r := memberPost(t, c, base, room, "bob", "sorry"); r.status != http.StatusCreated {
		t.Errorf("bob's post after the unban: %d %s", r.status, r.body)
	}
	if got := banList(t, c, mod, room); len(got) != 1 || got[0].User != "carol" {
		t.Errorf("the bans after the unban: %+v, want carol's alone", got)
	}

	if got := metrics("ban") - bansBefore; got != 3 {
		t.Errorf("caddy_chat_moderation_total{action=ban} rose by %v, want 3", got)
	}
	if got := metrics("unban") - unbansBefore; got != 2 {
		t.Errorf("caddy_chat_moderation_total{action=unban} rose by %v, want 2", got)
	}
	audit := logLines(t, filepath.Join(dir, "caddy.log"), "moderation")
	var got []string
	for _, e := range audit {
		if e["level"] != "info" || e["moderator"] != "admin" {
			t.Errorf("audit entry %v: want INFO by admin", e)
		}
		if line, _ := json.Marshal(e); strings.Contains(string(line), "127.0.0.1") || strings.Contains(string(line), "id:") {
			t.Errorf("audit entry %s shows a client key", line)
		}
		got = append(got, fmt.Sprintf("%s %s %s", e["action"], e["room"], e["target"]))
	}
	want := []string{
		"ban " + room + " user bob",
		fmt.Sprintf("ban %s message %s", room, carol.json["id"]),
		"ban * user dave",
		"unban * ban " + daveBan,
		"unban " + room + " ban " + bobBan,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit log:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBanAnonymousAuthorByMessage: on a public chat, a moderator bans the
// anonymous author of a message with purge: the author's posts from that
// address are refused under any name, what they posted is gone from the
// room while another client's message stays, and neither the answer nor
// the list shows the address.
func TestBanAnonymousAuthorByMessage(t *testing.T) {
	startCaddy(t, config{site: moderatedSite(t, false, "")})
	spammer, other := newPoster(t, "", 71), newPoster(t, "", 72)
	room := roomFor(t, "anon")
	spammer.post(t, room, "spammer", "buy", "")
	other.post(t, room, "eve", "hello", "")
	spam := spammer.post(t, room, "spammer", "buy more", "")
	r := doWith(t, client, "POST", rootSite+"/mod/rooms/"+room+"/bans", fmt.Sprintf(`{"message":%q,"purge":true}`, spam.json["id"]), asUser("admin")...)
	if r.status != http.StatusCreated || r.json["user"] != nil || strings.Contains(r.body, "127.0.0.71") {
		t.Fatalf("ban the anonymous author: %d %s, want 201 naming no one", r.status, r.body)
	}
	if r := spammer.post(t, room, "someone new", "hi", ""); r.status != http.StatusForbidden || r.json["reason"] != "banned" {
		t.Errorf("the banned address under another name: %d %s, want 403 banned", r.status, r.body)
	}
	if r := other.post(t, room, "eve", "still here", ""); r.status != http.StatusCreated {
		t.Errorf("another address: %d %s, want 201", r.status, r.body)
	}
	if got := history(t, room); got != "eve:hello:false,eve:still here:false" {
		t.Errorf("history after the purge: %s, want eve's messages alone", got)
	}
	list := doWith(t, client, "GET", rootSite+"/mod/rooms/"+room+"/bans", "", signedIn("admin")...)
	if list.status != http.StatusOK || strings.Contains(list.body, "127.0.0.71") || strings.Contains(list.body, "ip:") {
		t.Errorf("the list of bans: %d %s, want it without the address", list.status, list.body)
	}
}

// TestBanRefusals: bad input to the ban routes gets its status and a JSON
// error saying what is wrong, and changes nothing; a member, on a mount
// without moderate, is refused every ban route.
func TestBanRefusals(t *testing.T) {
	startCaddy(t, config{site: moderatedSite(t, true, ""), handler: memberChat})
	mod := rootSite + "/mod"
	room := roomFor(t, "refusals")
	msg := memberPost(t, client, rootSite, room, "bob", "hello")
	if msg.status != http.StatusCreated {
		t.Fatalf("bob's post: %d %s", msg.status, msg.body)
	}
	put := doWith(t, client, "POST", mod+"/rooms/"+room+"/bans", `{"user":"carol"}`, asUser("admin")...)
	if put.status != http.StatusCreated {
		t.Fatalf("ban carol: %d %s", put.status, put.body)
	}
	bans := mod + "/rooms/" + room + "/bans"
	everyRoom := banList(t, client, mod, "*")
	epoch, _, _ := rooms.ParseID(msg.json["id"].(string))
	for _, tt := range []struct {
		name, method, url, body string
		headers                 []string
		status                  int
		says                    string
	}{
		{"a member bans", "POST", rootSite + "/rooms/" + room + "/bans", `{"user":"bob"}`, asUser("bob"), 403, "moderating is not allowed here"},
		{"a member lists", "GET", rootSite + "/rooms/" + room + "/bans", "", signedIn("bob"), 403, "moderating is not allowed here"},
		{"a member unbans", "DELETE", rootSite + "/rooms/" + room + "/bans/" + put.json["id"].(string), "", signedIn("bob"), 403, "moderating is not allowed here"},
		{"from another site", "POST", bans, `{"user":"bob"}`, append(asUser("admin"), "Origin", "https://evil.example"), 403, "cross-site"},
		{"bad duration", "POST", bans, `{"user":"bob","for":"soon"}`, asUser("admin"), 400, `"for" must be a positive duration`},
		{"negative duration", "POST", bans, `{"user":"bob","for":"-1h"}`, asUser("admin"), 400, `"for" must be a positive duration`},
		{"zero duration", "POST", bans, `{"user":"bob","for":"0s"}`, asUser("admin"), 400, `"for" must be a positive duration`},
		{"neither message nor user", "POST", bans, `{"for":"1h"}`, asUser("admin"), 400, "name either the message"},
		{"both message and user", "POST", bans, fmt.Sprintf(`{"user":"bob","message":%q}`, msg.json["id"]), asUser("admin"), 400, "name either the message"},
		{"unknown message", "POST", bans, fmt.Sprintf(`{"message":%q}`, rooms.FormatID(epoch, 999)), asUser("admin"), 404, "no such message"},
		{"malformed message id", "POST", bans, `{"message":"nine"}`, asUser("admin"), 400, "malformed message id"},
		{"by message in every room", "POST", mod + "/rooms/*/bans", fmt.Sprintf(`{"message":%q}`, msg.json["id"]), asUser("admin"), 400, "a message is named in its room"},
		{"purge not a boolean", "POST", bans, `{"user":"bob","purge":"yes"}`, asUser("admin"), 400, `field "purge" must be true or false`},
		{"unknown field", "POST", bans, `{"user":"bob","days":3}`, asUser("admin"), 400, `unknown field "days"`},
		{"reason too long", "POST", bans, fmt.Sprintf(`{"user":"bob","reason":%q}`, strings.Repeat("x", 501)), asUser("admin"), 400, "at most 500 characters"},
		{"body too large", "POST", bans, fmt.Sprintf(`{"user":"bob","reason":%q}`, strings.Repeat("x", 64<<10)), asUser("admin"), 413, "request body is over"},
		{"a form", "POST", bans, "user=bob", append(signedIn("admin"), "Content-Type", "application/x-www-form-urlencoded"), 415, "send application/json"},
		{"invalid room", "POST", mod + "/rooms/a%2Fb/bans", `{"user":"bob"}`, asUser("admin"), 400, "invalid room name"},
		{"unknown ban", "DELETE", bans + "/AAAAAAAAAAAA", "", signedIn("admin"), 404, "no such ban"},
		{"a ban of another room", "DELETE", mod + "/rooms/" + roomFor(t, "other") + "/bans/" + put.json["id"].(string), "", signedIn("admin"), 404, "no such ban"},
		{"PUT", "PUT", bans, `{"user":"bob"}`, asUser("admin"), 405, "use GET, POST"},
		{"GET one ban", "GET", bans + "/" + put.json["id"].(string), "", signedIn("admin"), 405, "use DELETE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := doWith(t, client, tt.method, tt.url, tt.body, tt.headers...)
			refused(t, tt.name, r, tt.status)
			if msg, _ := r.json["error"].(string); !strings.Contains(msg, tt.says) {
				t.Errorf("%s: error %q, want it to say %q", tt.name, msg, tt.says)
			}
		})
	}
	if got := banList(t, client, mod, room); len(got) != 1 || got[0].User != "carol" {
		t.Errorf("the bans after the refusals: %+v, want carol's alone", got)
	}
	if got := banList(t, client, mod, "*"); len(got) != len(everyRoom) {
		t.Errorf("the bans of every room after the refusals: %+v, want %+v", got, everyRoom)
	}
	if r := memberPost(t, client, rootSite, room, "bob", "still here"); r.status != http.StatusCreated {
		t.Errorf("bob's post after the refused bans: %d %s", r.status, r.body)
	}
}

// TestBanSurvivesRestart: with store file, a ban holds after caddy stop
// and caddy run, with its id and expiry, until it is lifted.
func TestBanSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	admin := "localhost:" + freePort()
	store := "store file " + filepath.Join(dir, "chat.db")
	site, exited := moderatedNode(t, dir, admin, store)
	room := roomFor(t, "restart")
	r := doWith(t, client, "POST", site+"/mod/rooms/"+room+"/bans", `{"user":"bob","for":"2h"}`, asUser("admin")...)
	if r.status != http.StatusCreated {
		t.Fatalf("ban bob: %d %s", r.status, r.body)
	}
	before := banList(t, client, site+"/mod", room)
	stopBinary(t, admin, exited)

	site, _ = moderatedNode(t, dir, admin, store)
	if r := memberPost(t, client, site, room, "bob", "back"); r.status != http.StatusForbidden || r.json["reason"] != "banned" {
		t.Errorf("bob's post after the restart: %d %s, want 403 banned", r.status, r.body)
	}
	after := banList(t, client, site+"/mod", room)
	if len(after) != 1 || after[0].ID != before[0].ID || !after[0].Expires.Equal(*before[0].Expires) {
		t.Errorf("the bans after the restart: %+v, want %+v", after, before)
	}
	if r := doWith(t, client, "DELETE", site+"/mod/rooms/"+room+"/bans/"+before[0].ID, "", signedIn("admin")...); r.status != http.StatusNoContent {
		t.Fatalf("unban bob: %d %s", r.status, r.body)
	}
	if r := memberPost(t, client, site, room, "bob", "back"); r.status != http.StatusCreated {
		t.Errorf("bob's post after the unban: %d %s", r.status, r.body)
	}
}

// signedInCall is a gRPC request of msg by login, signed in with
// basic_auth.
func signedInCall[T any](login string, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	h := signedIn(login)
	req.Header().Set(h[0], h[1])
	return req
}

// TestGRPCBans: a moderator bans, lists and unbans over gRPC, signed in
// with basic_auth as for the REST routes: the ban holds the member's REST
// posts out until it is lifted; a member calling the same RPCs on a mount
// without moderate is denied, and bad requests get their codes.
func TestGRPCBans(t *testing.T) {
	startCaddy(t, config{options: "servers {\n protocols h1 h2 h2c\n }", site: moderatedSite(t, true, "grpc on"), handler: memberChat + "\n grpc on"})
	mod, member := grpcClient(rootSite+"/mod"), grpcClient(rootSite)
	room := roomFor(t, "grpc")

	ban, err := mod.Ban(callCtx(t), signedInCall("admin", &chatv1.BanRequest{Room: room, User: "bob", Duration: durationpb.New(time.Hour), Reason: "spam"}))
	if err != nil {
		t.Fatalf("Ban: %v", err)
	}
	if b := ban.Msg; b.Id == "" || b.User != "bob" || b.By != "admin" || b.Reason != "spam" || time.Until(b.Expires.AsTime()) < 59*time.Minute {
		t.Errorf("Ban answered %v, want bob's ban by admin for an hour", b)
	}
	if r := memberPost(t, client, rootSite, room, "bob", "spam"); r.status != http.StatusForbidden || r.json["reason"] != "banned" {
		t.Errorf("bob's post after the gRPC ban: %d %s, want 403 banned", r.status, r.body)
	}
	list, err := mod.ListBans(callCtx(t), signedInCall("admin", &chatv1.ListBansRequest{Room: room}))
	if err != nil || len(list.Msg.Bans) != 1 || list.Msg.Bans[0].Id != ban.Msg.Id || !list.Msg.Bans[0].Expires.AsTime().Equal(ban.Msg.Expires.AsTime()) {
		t.Fatalf("ListBans: %v %v, want the ban", list, err)
	}

	for _, tt := range []struct {
		name string
		call func() error
		code connect.Code
	}{
		{"a member bans", func() error {
			_, err := member.Ban(callCtx(t), signedInCall("bob", &chatv1.BanRequest{Room: room, User: "carol"}))
			return err
		}, connect.CodePermissionDenied},
		{"a member lists", func() error {
			_, err := member.ListBans(callCtx(t), signedInCall("bob", &chatv1.ListBansRequest{Room: room}))
			return err
		}, connect.CodePermissionDenied},
		{"a member unbans", func() error {
			_, err := member.Unban(callCtx(t), signedInCall("bob", &chatv1.UnbanRequest{Room: room, Id: ban.Msg.Id}))
			return err
		}, connect.CodePermissionDenied},
		{"negative duration", func() error {
			_, err := mod.Ban(callCtx(t), signedInCall("admin", &chatv1.BanRequest{Room: room, User: "carol", Duration: durationpb.New(-time.Hour)}))
			return err
		}, connect.CodeInvalidArgument},
		{"a duration and forever", func() error {
			_, err := mod.Ban(callCtx(t), signedInCall("admin", &chatv1.BanRequest{Room: room, User: "carol", Duration: durationpb.New(time.Hour), Forever: true}))
			return err
		}, connect.CodeInvalidArgument},
		{"unknown ban", func() error {
			_, err := mod.Unban(callCtx(t), signedInCall("admin", &chatv1.UnbanRequest{Room: room, Id: "AAAAAAAAAAAA"}))
			return err
		}, connect.CodeNotFound},
	} {
		if err := tt.call(); connect.CodeOf(err) != tt.code {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.code)
		}
	}

	if _, err := mod.Unban(callCtx(t), signedInCall("admin", &chatv1.UnbanRequest{Room: room, Id: ban.Msg.Id})); err != nil {
		t.Fatalf("Unban: %v", err)
	}
	if r := memberPost(t, client, rootSite, room, "bob", "sorry"); r.status != http.StatusCreated {
		t.Errorf("bob's post after the gRPC unban: %d %s", r.status, r.body)
	}
	if list, err := mod.ListBans(callCtx(t), signedInCall("admin", &chatv1.ListBansRequest{Room: room})); err != nil || len(list.Msg.Bans) != 0 {
		t.Errorf("ListBans after the unban: %v %v, want none", list, err)
	}
}

// TestRedisBansAcrossNodes: with store redis, a ban put on one node
// refuses the member's posts on the other, and lifting it there lets them
// post on the first again.
func TestRedisBansAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisStore(srv.URL(), ""), site: moderatedSite(t, true, ""), handler: memberChat})
	defer reload(t, config{})
	a := rootSite
	b, _ := moderatedNode(t, t.TempDir(), "localhost:"+freePort(), redisStore(srv.URL(), ""))
	room := roomFor(t, "redis")

	r := doWith(t, client, "POST", a+"/mod/rooms/"+room+"/bans", `{"user":"bob","for":"1h"}`, asUser("admin")...)
	if r.status != http.StatusCreated {
		t.Fatalf("ban bob on A: %d %s", r.status, r.body)
	}
	id := r.json["id"].(string)
	waitFor(t, "B to refuse bob", func() bool {
		r := memberPost(t, client, b, room, "bob", "on B")
		return r.status == http.StatusForbidden && r.json["reason"] == "banned"
	})
	if got := banList(t, client, b+"/mod", room); len(got) != 1 || got[0].ID != id {
		t.Errorf("the bans listed on B: %+v, want A's %s", got, id)
	}
	if r := doWith(t, client, "DELETE", b+"/mod/rooms/"+room+"/bans/"+id, "", signedIn("admin")...); r.status != http.StatusNoContent {
		t.Fatalf("unban bob on B: %d %s", r.status, r.body)
	}
	waitFor(t, "A to take bob's posts again", func() bool {
		return memberPost(t, client, a, room, "bob", "on A").status == http.StatusCreated
	})
}
