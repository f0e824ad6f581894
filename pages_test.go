package chat

import (
	"context"
	"fmt"
	"net/http"
	neturl "net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// pageCSP is the Content-Security-Policy docs/widget.md promises for the pages,
// spelled out here rather than taken from the code under test.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

var (
	scriptTag = regexp.MustCompile(`<script\b[^>]*>`)
	linkTag   = regexp.MustCompile(`<link\b[^>]*>`)
	srcAttr   = regexp.MustCompile(`\b(?:src|href|action)="([^"]*)"`)
	// Inline code, which the CSP would block: a style element or
	// attribute, or an event handler attribute.
	inlineCode = regexp.MustCompile(`(?i)<style\b|\sstyle=|\son[a-z]+=`)
)

// attr returns the value of the first src, href or action attribute in tag.
func attr(tag string) string {
	if m := srcAttr.FindStringSubmatch(tag); m != nil {
		return m[1]
	}
	return ""
}

// TestPages: without a browser, the room list and the room page are HTML
// under the strict CSP, with no inline code, and load their script and
// style by relative URLs that work at the site root and under /chat/.
func TestPages(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	last := postJSON(t, rootSite, room, "api", "hello")
	for _, base := range []string{rootSite, chatBase} {
		for _, page := range []struct{ path, script, style string }{
			{"/", "static/chat.js", "static/chat.css"},
			{"/room/" + room, "../static/chat.js", "../static/chat.css"},
		} {
			url := base + page.path
			resp := do(t, "GET", url, "")
			if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "text/html; charset=utf-8" {
				t.Fatalf("GET %s: %d %s", url, resp.status, resp.header.Get("Content-Type"))
			}
			for name, want := range map[string]string{
				"Content-Security-Policy": pageCSP,
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "same-origin",
			} {
				if got := resp.header.Values(name); !slices.Equal(got, []string{want}) {
					t.Errorf("GET %s: %s is %q, want %q", url, name, got, want)
				}
			}
			var scripts, styles []string
			for _, tag := range scriptTag.FindAllString(resp.body, -1) {
				scripts = append(scripts, attr(tag)) // "" for an inline script
			}
			for _, tag := range linkTag.FindAllString(resp.body, -1) {
				if strings.Contains(tag, `rel="stylesheet"`) {
					styles = append(styles, attr(tag))
				}
			}
			if !slices.Equal(scripts, []string{page.script}) || !slices.Equal(styles, []string{page.style}) {
				t.Errorf("GET %s: scripts %q and styles %q, want only %s and %s", url, scripts, styles, page.script, page.style)
			}
			if m := inlineCode.FindString(resp.body); m != "" {
				t.Errorf("GET %s: inline code %q", url, m)
			}
			for _, m := range srcAttr.FindAllStringSubmatch(resp.body, -1) {
				if ref, err := neturl.Parse(m[1]); err != nil || ref.IsAbs() || strings.HasPrefix(m[1], "/") {
					t.Errorf("GET %s: %s is not a relative URL", url, m[0])
				}
			}
			pageURL, _ := neturl.Parse(url)
			for ref, ctype := range map[string]string{page.script: "text/javascript; charset=utf-8", page.style: "text/css; charset=utf-8"} {
				asset := pageURL.ResolveReference(&neturl.URL{Path: ref}).String()
				got := do(t, "GET", asset, "")
				if got.status != http.StatusOK || got.header.Get("Content-Type") != ctype || got.header.Get("X-Content-Type-Options") != "nosniff" || got.body == "" {
					t.Errorf("GET %s (from %s): %d %q %q, want 200 %s with nosniff", asset, url, got.status, got.header.Get("Content-Type"), got.header.Get("X-Content-Type-Options"), ctype)
				}
			}
		}
		// The page says where its stream resumes: after the newest
		// message it rendered.
		if body := do(t, "GET", base+"/room/"+room, "").body; !strings.Contains(body, `data-last-id="`+last.ID+`"`) {
			t.Errorf("the room page at %s does not resume after %s", base, last.ID)
		}
	}
}

// TestWidgetFiles: widget.js is served at the mount point, and what it
// loads, resolved from there as the browser does, is served with its type:
// the module it imports, and its style sheet.
func TestWidgetFiles(t *testing.T) {
	startCaddy(t, config{})
	importFrom := regexp.MustCompile(`from "([^"]+)"`)
	fetched := regexp.MustCompile(`new URL\("([^"]+\.css)", base\)`)
	for _, base := range []string{rootSite, chatBase} {
		widget := do(t, "GET", base+"/widget.js", "")
		if widget.status != http.StatusOK || widget.header.Get("Content-Type") != "text/javascript; charset=utf-8" ||
			!strings.Contains(widget.body, `customElements.define("chat-room"`) {
			t.Fatalf("GET %s/widget.js: %d %q", base, widget.status, widget.header.Get("Content-Type"))
		}
		want := map[string]string{}
		for _, m := range importFrom.FindAllStringSubmatch(widget.body, -1) {
			want[m[1]] = "text/javascript; charset=utf-8"
		}
		for _, m := range fetched.FindAllStringSubmatch(widget.body, -1) {
			want[m[1]] = "text/css; charset=utf-8"
		}
		if len(want) != 2 {
			t.Fatalf("widget.js loads %v, want a module and a style sheet", want)
		}
		widgetURL, _ := neturl.Parse(base + "/widget.js")
		for ref, ctype := range want {
			asset := widgetURL.ResolveReference(&neturl.URL{Path: ref}).String()
			got := do(t, "GET", asset, "")
			if got.status != http.StatusOK || got.header.Get("Content-Type") != ctype || got.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: %d %q, want 200 %s with nosniff", asset, got.status, got.header.Get("Content-Type"), ctype)
			}
		}
	}
}

// TestPageOpenRoom: the room list's form, sent without script, lands on the
// room page by a relative redirect.
func TestPageOpenRoom(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", chatBase+"/room?name="+room, nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "room/"+room {
		t.Errorf("the open-room form answers %d to %q, want 303 to room/%s", resp.StatusCode, resp.Header.Get("Location"), room)
	}
}

// TestPageHostileText: markup in a message and a name reaches the
// server-rendered history only as escaped text.
func TestPageHostileText(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	const img, script = `<img src=x onerror=alert(1)>`, `<script>alert(2)</script>`
	postJSON(t, rootSite, room, script, img)
	body := do(t, "GET", rootSite+"/room/"+room, "").body
	for _, want := range []string{`&lt;img src=x onerror=alert(1)&gt;`, `&lt;script&gt;alert(2)&lt;/script&gt;`} {
		if !strings.Contains(body, want) {
			t.Errorf("the room page lacks the escaped text %s", want)
		}
	}
	for _, markup := range []string{img, script} {
		if strings.Contains(body, markup) {
			t.Errorf("the room page carries the markup %s", markup)
		}
	}
}

// TestPageUIOff: with `ui off`, the page paths belong to the next handler,
// and GET of a room answers 405 (POST and DELETE still work there).
func TestPageUIOff(t *testing.T) {
	startCaddy(t, config{handler: "ui off"})
	room := roomFor(t, "a")
	for base, next := range map[string]string{rootSite: "not chat", chatBase: "not chat, under /chat"} {
		for _, path := range []string{"/", "/room", "/room?name=" + room, "/static/chat.js", "/static/chat.css", "/widget.js", "/static/core.js", "/static/widget.css"} {
			if resp := do(t, "GET", base+path, ""); resp.status != http.StatusNotFound || resp.body != next {
				t.Errorf("ui off: GET %s: %d %.60q, want the next handler's 404 %q", base+path, resp.status, resp.body, next)
			}
		}
		resp := do(t, "GET", base+"/room/"+room, "")
		if resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") != "POST, DELETE" {
			t.Errorf("ui off: GET %s/room/%s: %d, Allow %q; want 405, Allow POST, DELETE", base, room, resp.status, resp.header.Get("Allow"))
		}
	}
}

// renderedMessage is a message's list item in the server-rendered page.
var renderedMessage = regexp.MustCompile(`<li data-id="([^"]+)">(.*?)</li>`)

// TestPageVerifiedAndUTC: without script, the room page marks the signed-in
// author's message with an accessible "verified" badge and not an anonymous
// one under the same name, shows times in UTC and says so, with the full
// time in datetime, and starts the list with its UTC day.
func TestPageVerifiedAndUTC(t *testing.T) {
	startCaddy(t, trustConfig(t, "", ""))
	room := roomFor(t, "a")
	impostor := newPoster(t, "", 2).post(t, room, "alice", "I am alice", "")
	alice := newPoster(t, "alice", 3).post(t, room, "", "signed in", "")
	if impostor.status != http.StatusCreated || alice.status != http.StatusCreated {
		t.Fatalf("posting: %d %s, %d %s", impostor.status, impostor.body, alice.status, alice.body)
	}
	body := do(t, "GET", rootSite+"/room/"+room, "").body
	items := map[string]string{}
	for _, m := range renderedMessage.FindAllStringSubmatch(body, -1) {
		items[m[1]] = m[2]
	}
	const mark = `role="img" aria-label="verified"`
	for _, tc := range []struct {
		name     string
		posted   response
		verified bool
	}{{"the anonymous alice", impostor, false}, {"the signed-in alice", alice, true}} {
		id, _ := tc.posted.json["id"].(string)
		item, ok := items[id]
		if !ok {
			t.Errorf("the page does not show %s's message %s:\n%s", tc.name, id, body)
			continue
		}
		if !strings.Contains(item, `<span class="user">alice</span>`) {
			t.Errorf("%s's message is not shown under the name alice: %s", tc.name, item)
		}
		if got := strings.Contains(item, mark); got != tc.verified {
			t.Errorf("%s's message carries the verified mark: %v, want %v: %s", tc.name, got, tc.verified, item)
		}
		posted, err := time.Parse(time.RFC3339Nano, tc.posted.json["time"].(string))
		if err != nil {
			t.Fatal(err)
		}
		clock := fmt.Sprintf(`<time datetime="%s" title="%s UTC">%s UTC</time>`,
			tc.posted.json["time"], posted.Format("2006-01-02 15:04:05"), posted.Format("15:04"))
		if !strings.Contains(item, clock) {
			t.Errorf("%s's message does not show its time as %s: %s", tc.name, clock, item)
		}
	}
	first, _ := impostor.json["time"].(string)
	day := fmt.Sprintf(`<li class="day"><time datetime="%s">`, first[:10])
	if i, j := strings.Index(body, day), strings.Index(body, `<li data-id=`); i < 0 || i > j {
		t.Errorf("the list does not start with the day separator %s:\n%s", day, body)
	}
}
