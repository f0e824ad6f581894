package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/internal/tokentest"
	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/proto/chat/v1/chatv1connect"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// messagesSite is an HTTPS site whose chat edits and deletes messages:
// anonymous authors post at the root, members alice and bob sign in under
// /members/, admin moderates under /mod/ (moderatedSite), and /quick/
// gives authors 100ms to change their minds. Every password is "secret";
// every chat serves gRPC, and the authors' chats refuse the word "pills".
func messagesSite(t *testing.T) site {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return site{dir: t.TempDir(), handler: "grpc on\n\t\tblock_words pills", site: moderatedSite(t, false, "grpc on") + fmt.Sprintf(`
	handle /metrics {
		metrics
	}
	handle_path /members/* {
		basic_auth {
			alice %[1]s
			bob %[1]s
		}
		chat {
			identity {http.auth.user.id} required
			grpc on
			block_words pills
		}
	}
	handle_path /quick/* {
		chat {
			edit_window 100ms
		}
	}`, hash)}
}

// posted is a submit answer: the message and its author's secret.
type posted struct {
	rooms.Message
	secret string
}

// submitAt posts text to room through c at base, the mount of a chat,
// with headers, and returns the answer.
func submitAt(t *testing.T, c *http.Client, base, room, text string, headers ...string) posted {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"room": room, "user": "sam", "message": text})
	r := doWith(t, c, "POST", base+"/submit", string(body), append([]string{"Content-Type", ctJSON}, headers...)...)
	var p posted
	if r.status != http.StatusCreated || json.Unmarshal([]byte(r.body), &p.Message) != nil {
		t.Fatalf("submit %q at %s: %d %s", text, base, r.status, r.body)
	}
	p.secret, _ = r.json["secret"].(string)
	return p
}

// historyText is the JSON history of room at base, as a reader gets it.
func historyText(t *testing.T, c *http.Client, base, room string) string {
	t.Helper()
	r := doWith(t, c, "GET", base+"/rooms/"+room+"/messages", "")
	if r.status != http.StatusOK {
		t.Fatalf("history of %s: %d %s", room, r.status, r.body)
	}
	return r.body
}

// TestAuthorEditsAndDeletes: an anonymous author edits and deletes their
// message with the secret that only their submit answer carried, and a
// signed-in author with their identity; the stream shows each action and
// the history the room as it stands. Another's message, a wrong secret,
// an unknown id, bad input and a cross-site request are refused with a
// JSON reason, and change nothing; past the window, so is the author.
func TestAuthorEditsAndDeletes(t *testing.T) {
	startSite(t, messagesSite(t))
	c := siteClient(t, "HTTP/2.0")
	base := "https://" + siteAddr
	room := roomFor(t, "own")
	msgURL := func(mount, id string) string { return base + mount + "/rooms/" + room + "/messages/" + id }

	typo := submitAt(t, c, base, room, "helo")
	if typo.secret == "" {
		t.Fatalf("an anonymous author's submit answer has no secret")
	}
	s := openStreamWith(t, c, base+"/stream/"+room, "Last-Event-ID", typo.ID)
	defer s.close()

	jsonHdr := []string{"Content-Type", ctJSON}
	withSecret := append([]string{"Chat-Secret", typo.secret}, jsonHdr...)
	for _, tc := range []struct {
		what, method, mount, id, body string
		headers                       []string
		status                        int
		reason                        string
	}{
		{"no secret", "PATCH", "", typo.ID, `{"message":"hacked"}`, jsonHdr, 403, "not_yours"},
		{"a wrong secret", "PATCH", "", typo.ID, `{"message":"hacked"}`, []string{"Chat-Secret", "AAAA", "Content-Type", ctJSON}, 403, "not_yours"},
		{"a member, who is no moderator", "DELETE", "/members", typo.ID, "", signedIn("bob"), 403, "not_yours"},
		{"an unknown id", "PATCH", "", typo.ID + "0", `{"message":"x"}`, withSecret, 404, "not_found"},
		{"no id at all", "DELETE", "", "nope", "", withSecret, 404, "not_found"},
		{"malformed JSON", "PATCH", "", typo.ID, `{"message":`, withSecret, 400, ""},
		{"another field", "PATCH", "", typo.ID, `{"message":"x","user":"eve"}`, withSecret, 400, ""},
		{"a form", "PATCH", "", typo.ID, "message=x", []string{"Chat-Secret", typo.secret, "Content-Type", ctForm}, 415, ""},
		{"a blocked word", "PATCH", "", typo.ID, `{"message":"cheap PILLS"}`, withSecret, 403, "blocked_word"},
		{"too large", "PATCH", "", typo.ID, `{"message":"` + strings.Repeat("x", DefaultMaxMessageSize+1) + `"}`, withSecret, 413, ""},
		{"a cross-site browser", "DELETE", "", typo.ID, "", []string{"Chat-Secret", typo.secret, "Sec-Fetch-Site", "cross-site", "Origin", "https://elsewhere.example"}, 403, "cross_site"},
		{"PUT", "PUT", "", typo.ID, `{"message":"x"}`, withSecret, 405, ""},
	} {
		r := doWith(t, c, tc.method, msgURL(tc.mount, tc.id), tc.body, tc.headers...)
		if tc.reason == "" {
			refused(t, tc.what, r, tc.status)
		} else {
			refusedFor(t, tc.what, r, tc.status, tc.reason)
		}
	}
	s.quiet(t, 100*time.Millisecond)
	if h := historyText(t, c, base, room); !strings.Contains(h, `"message":"helo"`) || strings.Contains(h, "edited") {
		t.Fatalf("history after refused actions: %s, want helo unedited", h)
	}

	r := doWith(t, c, "PATCH", msgURL("", typo.ID), `{"message":"hello"}`, withSecret...)
	if r.status != http.StatusOK || r.json["target"] != typo.ID || r.json["message"] != "hello" || r.json["id"] == "" || r.json["time"] == "" {
		t.Fatalf("edit with the secret: %d %s", r.status, r.body)
	}
	if ev := s.next(t); ev.Name != "edit" || ev.ID != r.json["id"] || strings.TrimSpace(ev.Data) != strings.TrimSpace(r.body) {
		t.Errorf("stream after the edit: %+v, want the edit as answered: %s", ev, r.body)
	}
	if h := historyText(t, c, base, room); !strings.Contains(h, `"message":"hello"`) || !strings.Contains(h, `"edited":"`) {
		t.Errorf("history after the edit: %s, want hello, edited", h)
	}
	r = doWith(t, c, "DELETE", msgURL("", typo.ID), "", "Chat-Secret", typo.secret)
	if r.status != http.StatusOK || r.json["target"] != typo.ID || r.json["by"] != "author" {
		t.Fatalf("delete with the secret: %d %s", r.status, r.body)
	}
	if ev := s.next(t); ev.Name != "delete" || ev.ID != r.json["id"] {
		t.Errorf("stream after the delete: %+v, want the delete %s", ev, r.body)
	}
	refusedFor(t, "deleting it again", doWith(t, c, "DELETE", msgURL("", typo.ID), "", "Chat-Secret", typo.secret), 404, "not_found")
	if h := historyText(t, c, base, room); strings.Contains(h, "hel") {
		t.Errorf("history after the delete: %s, want the message gone", h)
	}

	// A signed-in author proves it by identity, and gets no secret.
	mine := submitAt(t, c, base+"/members", room, "by alice", signedIn("alice")...)
	if mine.secret != "" || !mine.Verified {
		t.Fatalf("alice's submit answer: %+v, want verified without a secret", mine)
	}
	refusedFor(t, "bob editing alice's message", doWith(t, c, "PATCH", msgURL("/members", mine.ID), `{"message":"by bob"}`, asUser("bob")...), 403, "not_yours")
	refusedFor(t, "an anonymous edit of alice's message", doWith(t, c, "PATCH", msgURL("", mine.ID), `{"message":"by sam"}`, jsonHdr...), 403, "not_yours")
	if r := doWith(t, c, "PATCH", msgURL("/members", mine.ID), `{"message":"by alice, edited"}`, asUser("alice")...); r.status != http.StatusOK {
		t.Errorf("alice edits her message: %d %s", r.status, r.body)
	}
	if r := doWith(t, c, "DELETE", msgURL("/members", mine.ID), "", signedIn("alice")...); r.status != http.StatusOK || r.json["by"] != "author" {
		t.Errorf("alice deletes her message: %d %s", r.status, r.body)
	}
	for _, want := range []string{"message", "edit", "delete"} {
		if ev := s.next(t); ev.Name != want {
			t.Errorf("stream: %+v, want alice's %s", ev, want)
		}
	}

	// Past the window, the author may change nothing.
	late := submitAt(t, c, base+"/quick", room, "too late")
	time.Sleep(150 * time.Millisecond)
	refusedFor(t, "an edit past the window", doWith(t, c, "PATCH", msgURL("/quick", late.ID), `{"message":"x"}`, "Chat-Secret", late.secret, "Content-Type", ctJSON), 403, "edit_window_passed")
	refusedFor(t, "a delete past the window", doWith(t, c, "DELETE", msgURL("/quick", late.ID), "", "Chat-Secret", late.secret), 403, "edit_window_passed")
	if h := historyText(t, c, base, room); !strings.Contains(h, "too late") {
		t.Errorf("history after refused late actions: %s, want the message as posted", h)
	}
	published := []string{historyText(t, c, base, room)}
	for ev := s.next(t); ; ev = s.next(t) {
		published = append(published, ev.Data)
		if strings.Contains(ev.Data, "too late") {
			break
		}
	}
	for _, h := range published {
		if strings.Contains(h, typo.secret) || strings.Contains(h, late.secret) || strings.Contains(h, `"secret"`) {
			t.Errorf("a secret was published: %s", h)
		}
	}
}

// TestModeratorDeleteReachesStreams: a moderator signed in under /mod/
// deletes a message over HTTP and another over gRPC; each delete reaches
// an open SSE stream and an open gRPC stream of the room, marked as a
// moderator's, and is audited: logged with who did it, and counted. The history, over HTTP and
// gRPC, and a reader starting over, never show the text again.
func TestModeratorDeleteReachesStreams(t *testing.T) {
	s := messagesSite(t)
	startSite(t, s)
	c := siteClient(t, "HTTP/2.0")
	base := "https://" + siteAddr
	room := roomFor(t, "mod")
	deletes := func() float64 {
		return metricAt(t, c, base+"/metrics", `caddy_chat_moderation_total{action="delete"}`)
	}
	deletesBefore := deletes()
	spam := submitAt(t, c, base, room, "buy cheap watches")
	more := submitAt(t, c, base, room, "and more watches")
	fair := submitAt(t, c, base, room, "a fair question")
	sse := openStreamWith(t, c, base+"/stream/"+room, "Last-Event-ID", fair.ID)
	defer sse.close()
	reader := chatv1connect.NewChatServiceClient(c, base, connect.WithGRPC())
	rpc := openRPCStream(t, reader, &chatv1.StreamRequest{Room: room, LastEventId: fair.ID})

	r := doWith(t, c, "DELETE", base+"/mod/rooms/"+room+"/messages/"+spam.ID, "", signedIn("admin")...)
	if r.status != http.StatusOK || r.json["target"] != spam.ID || r.json["by"] != "moderator" {
		t.Fatalf("a moderator's delete over HTTP: %d %s", r.status, r.body)
	}
	mod := chatv1connect.NewChatServiceClient(c, base+"/mod", connect.WithGRPC())
	del, err := mod.DeleteMessage(callCtx(t), signedInCall("admin", &chatv1.DeleteMessageRequest{Room: room, Id: more.ID}))
	if err != nil || del.Msg.GetTarget() != more.ID || del.Msg.GetBy() != "moderator" {
		t.Fatalf("a moderator's delete over gRPC: %v %v", del, err)
	}

	for _, want := range []struct{ id, target string }{{r.json["id"].(string), spam.ID}, {del.Msg.GetId(), more.ID}} {
		if ev := sse.next(t); ev.Name != "delete" || ev.ID != want.id || !strings.Contains(ev.Data, `"target":"`+want.target+`","by":"moderator"`) {
			t.Errorf("SSE stream: %+v, want the delete %s of %s by a moderator", ev, want.id, want.target)
		}
		if ev := rpc.next(t).GetDelete(); ev.GetId() != want.id || ev.GetTarget() != want.target || ev.GetBy() != "moderator" {
			t.Errorf("gRPC stream: %v, want the delete %s of %s by a moderator", ev, want.id, want.target)
		}
	}

	if h := historyText(t, c, base, room); strings.Contains(h, "watches") || !strings.Contains(h, "a fair question") {
		t.Errorf("history after the deletes: %s, want only the fair question", h)
	}
	hist, err := reader.History(callCtx(t), connect.NewRequest(&chatv1.HistoryRequest{Room: room}))
	if err != nil || len(hist.Msg.GetMessages()) != 1 || hist.Msg.GetMessages()[0].GetId() != fair.ID {
		t.Errorf("gRPC history after the deletes: %v %v, want only %s", hist, err, fair.ID)
	}
	again := openStreamWith(t, c, base+"/stream/"+room+"?history=50")
	defer again.close()
	for range 3 { // the fair question and the two deletes
		if ev := again.next(t); strings.Contains(ev.Data, "watches") {
			t.Errorf("a reader starting over received %+v", ev)
		}
	}

	var audited []string
	for _, e := range logLines(t, filepath.Join(s.dir, "caddy.log"), "moderation") {
		if e["room"] == room {
			audited = append(audited, fmt.Sprint(e["action"], " ", e["moderator"], " ", e["target"]))
		}
	}
	if want := []string{"delete admin message " + spam.ID, "delete admin message " + more.ID}; fmt.Sprint(audited) != fmt.Sprint(want) {
		t.Errorf("audit log: %v, want %v", audited, want)
	}
	if got := deletes() - deletesBefore; got != 2 {
		t.Errorf("caddy_chat_moderation_total{action=\"delete\"} rose by %v, want 2", got)
	}
}

// TestGRPCAuthorEditsAndDeletes: over gRPC, Submit answers an anonymous
// author with the secret, which EditMessage and DeleteMessage take; the
// edit reaches a gRPC stream, which opens at once although the site
// compresses with encode. Without the secret, or for an unknown id,
// they are refused with the codes of the HTTP refusals.
func TestGRPCAuthorEditsAndDeletes(t *testing.T) {
	startSite(t, messagesSite(t))
	c := chatv1connect.NewChatServiceClient(siteClient(t, "HTTP/2.0"), "https://"+siteAddr, connect.WithGRPC())
	room := roomFor(t, "rpc")
	msg := submitRPC(t, c, room, "sam", "helo", "")
	if msg.GetSecret() == "" {
		t.Fatal("Submit answered an anonymous author without a secret")
	}
	s := openRPCStream(t, c, &chatv1.StreamRequest{Room: room, LastEventId: msg.GetId()})

	ctx := callCtx(t)
	for _, tc := range []struct {
		what string
		err  error
		code connect.Code
	}{
		{"an edit without the secret", second(c.EditMessage(ctx, connect.NewRequest(&chatv1.EditMessageRequest{Room: room, Id: msg.GetId(), Message: "x"}))), connect.CodePermissionDenied},
		{"an edit past the size", second(c.EditMessage(ctx, connect.NewRequest(&chatv1.EditMessageRequest{Room: room, Id: msg.GetId(), Message: strings.Repeat("x", DefaultMaxMessageSize+1), Secret: msg.GetSecret()}))), connect.CodeResourceExhausted},
		{"a delete of an unknown id", second(c.DeleteMessage(ctx, connect.NewRequest(&chatv1.DeleteMessageRequest{Room: room, Id: msg.GetId() + "0", Secret: msg.GetSecret()}))), connect.CodeNotFound},
	} {
		if connect.CodeOf(tc.err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.what, tc.err, tc.code)
		}
	}

	edit, err := c.EditMessage(ctx, connect.NewRequest(&chatv1.EditMessageRequest{Room: room, Id: msg.GetId(), Message: "hello", Secret: msg.GetSecret()}))
	if err != nil || edit.Msg.GetTarget() != msg.GetId() || edit.Msg.GetMessage() != "hello" {
		t.Fatalf("EditMessage with the secret: %v %v", edit, err)
	}
	if ev := s.next(t).GetEdit(); ev.GetId() != edit.Msg.GetId() || ev.GetMessage() != "hello" {
		t.Errorf("gRPC stream after the edit: %v, want %v", ev, edit.Msg)
	}
	del, err := c.DeleteMessage(ctx, connect.NewRequest(&chatv1.DeleteMessageRequest{Room: room, Id: msg.GetId(), Secret: msg.GetSecret()}))
	if err != nil || del.Msg.GetTarget() != msg.GetId() || del.Msg.GetBy() != "author" {
		t.Fatalf("DeleteMessage with the secret: %v %v", del, err)
	}
	if ev := s.next(t).GetDelete(); ev.GetId() != del.Msg.GetId() {
		t.Errorf("gRPC stream after the delete: %v, want %v", ev, del.Msg)
	}
}

// second is the error of a call that answers a value and an error.
func second[T any](_ T, err error) error { return err }

// TestRedisDeleteAcrossNodes: with store redis, an author's edit and
// delete on one node, and a moderator's delete, reach a stream on the
// other, whose history then holds neither the old texts nor the messages.
func TestRedisDeleteAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	startCaddy(t, config{global: redisStore(srv.URL(), ""), site: moderatedSite(t, false, "")})
	defer reload(t, config{})
	a, b := rootSite, redisNode(t, srv.URL())
	room := roomFor(t, "a")

	mine := submitAt(t, client, a, room, "spelled rong")
	onB := openStream(t, b+"/stream/"+room, "Last-Event-ID", mine.ID)
	defer onB.close()
	msgURL := a + "/rooms/" + room + "/messages/" + mine.ID
	if r := do(t, "PATCH", msgURL, `{"message":"spelled right"}`, "Content-Type", ctJSON, "Chat-Secret", mine.secret); r.status != http.StatusOK {
		t.Fatalf("edit on A: %d %s", r.status, r.body)
	}
	if ev := onB.next(t); ev.Name != "edit" || !strings.Contains(ev.Data, `"message":"spelled right"`) {
		t.Errorf("stream on B after the edit on A: %+v", ev)
	}
	r := do(t, "DELETE", msgURL, "", "Chat-Secret", mine.secret)
	if r.status != http.StatusOK {
		t.Fatalf("delete on A: %d %s", r.status, r.body)
	}
	if ev := onB.next(t); ev.Name != "delete" || ev.ID != r.json["id"] || !strings.Contains(ev.Data, mine.ID) {
		t.Errorf("stream on B after the delete on A: %+v, want %s", ev, r.body)
	}
	if h := historyText(t, client, b, room); strings.Contains(h, "spelled") {
		t.Errorf("history on B after the delete on A: %s", h)
	}

	spam := submitAt(t, client, b, room, "buy cheap pills")
	if ev := onB.next(t); ev.Name != "message" || ev.ID != spam.ID {
		t.Fatalf("stream on B after the spam: %+v, want message %s", ev, spam.ID)
	}
	r = do(t, "DELETE", a+"/mod/rooms/"+room+"/messages/"+spam.ID, "", signedIn("admin")...)
	if r.status != http.StatusOK || r.json["by"] != "moderator" {
		t.Fatalf("a moderator's delete on A: %d %s", r.status, r.body)
	}
	if ev := onB.next(t); ev.Name != "delete" || ev.ID != r.json["id"] || !strings.Contains(ev.Data, `"by":"moderator"`) {
		t.Errorf("stream on B after the moderator's delete on A: %+v, want %s", ev, r.body)
	}
	if h := historyText(t, client, b, room); strings.Contains(h, "pills") {
		t.Errorf("history on B after the moderator's delete on A: %s", h)
	}
}

// TestConfigTellsTheWidget: GET /config tells the widget what its reader
// may do to messages: whether the mount moderates, the edit window in
// seconds, and who the reader is when the site knows; no cache keeps it.
func TestConfigTellsTheWidget(t *testing.T) {
	startSite(t, messagesSite(t))
	c := siteClient(t, "HTTP/2.0")
	for _, tc := range []struct {
		mount   string
		headers []string
		want    string
	}{
		{"", nil, `{"moderate":false,"edit_window":900}`},
		{"/members", signedIn("alice"), `{"moderate":false,"edit_window":900,"identity":"alice"}`},
		{"/mod", signedIn("admin"), `{"moderate":true,"edit_window":900,"identity":"admin"}`},
	} {
		r := doWith(t, c, "GET", "https://"+siteAddr+tc.mount+"/config", "", tc.headers...)
		if r.status != http.StatusOK || strings.TrimSpace(r.body) != tc.want || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s/config: %d %s (Cache-Control %q), want %s, not to be stored", tc.mount, r.status, r.body, r.header.Get("Cache-Control"), tc.want)
		}
	}
}

// TestTokenModeratorDeletes: on a mount without moderate, a caller whose
// token grants moderating a room deletes any message there, as a
// moderator, and a reader's stream sees it; a member without the grant
// may not delete another's message.
func TestTokenModeratorDeletes(t *testing.T) {
	defer reload(t, config{})
	startCaddy(t, hs256Config(t))
	s := tokentest.NewSigner(t, "hs256", "")
	room := privateRoom(t)
	grants := map[string][]string{"read": {privateRooms}, "post": {privateRooms}}
	bob, dave := bearer(signed(t, s, "bob", time.Minute, grants)), bearer(signed(t, s, "dave", time.Minute, grants))
	mod := bearer(signed(t, s, "carol", time.Minute, map[string][]string{"read": {privateRooms}, "moderate": {room}}))
	spam := postAs(t, rootSite, room, "buy now", bob...)
	if spam.status != http.StatusCreated {
		t.Fatalf("bob's post: %d %s", spam.status, spam.body)
	}
	reader := openStream(t, rootSite+"/stream/"+room+"?last_event_id="+spam.json["id"].(string), dave...)
	defer reader.close()
	msgURL := rootSite + "/rooms/" + room + "/messages/" + spam.json["id"].(string)

	refusedFor(t, "dave deletes bob's message", do(t, "DELETE", msgURL, "", dave...), http.StatusForbidden, "not_yours")
	r := do(t, "DELETE", msgURL, "", mod...)
	if r.status != http.StatusOK || r.json["by"] != "moderator" {
		t.Fatalf("the token moderator's delete: %d %s, want 200 by a moderator", r.status, r.body)
	}
	if ev := reader.next(t); ev.Name != "delete" || ev.ID != r.json["id"] {
		t.Errorf("the reader's stream: %+v, want the delete %s", ev, r.body)
	}
}
