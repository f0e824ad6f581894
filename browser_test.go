package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // Asia/Tokyo on a machine without a zone database

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/caddy-chat/caddy-chat/internal/tokentest"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/ui"
)

// browserTest is a page test; it opens its tabs in browser.
type browserTest struct {
	name string
	run  func(t *testing.T, browser context.Context)
}

// browserTests are the page tests TestBrowser runs.
var browserTests = []browserTest{
	{"TwoPages", testTwoPages},
	{"Reconnect", testReconnect},
	{"RefusedReconnect", testRefusedReconnect},
	{"ResetNotice", testResetNotice},
	{"DoubleEnter", testDoubleEnter},
	{"SendFails", testSendFails},
	{"HostileText", testHostileText},
	{"WithoutScript", testWithoutScript},
	{"RoomDeleted", testRoomDeleted},
	{"RoomList", testRoomList},
	{"LocalTimes", testLocalTimes},
	{"LocalDays", testLocalDays},
	{"Widget", testWidget},
	{"WidgetCrossOrigin", testWidgetCrossOrigin},
	{"WidgetToken", testWidgetToken},
	{"Presence", testPresence},
	{"OlderOnScroll", testOlderOnScroll},
	{"OlderByKeyboard", testOlderByKeyboard},
	{"ModeratorDeletes", testModeratorDeletes},
	{"AuthorEdits", testAuthorEdits},
	{"ModeratorBans", testModeratorBans},
}

var screenshots = flag.Bool("screenshots", false, "write the screenshots of README.md and docs/widget.md to docs/ (go test -run Browser/Screenshots -screenshots)")

// TestBrowser starts one headless Chromium and runs every page test in it,
// each in a browser context of its own (its own storage). Its profile and
// temporary files live in the test's temporary directory, removed at the
// end. Without Chromium the test fails; a developer who wants to skip the
// browser tests says so with CHAT_SKIP_BROWSER=1.
func TestBrowser(t *testing.T) {
	browser := startBrowser(t)
	tests := browserTests
	if *screenshots {
		tests = append(slices.Clip(tests), browserTest{"Screenshots", testScreenshots})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The session's first tab creates the browser context that
			// the test's tabs then share.
			session, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
			t.Cleanup(cancel) // after the tabs' cleanups, which may take screenshots
			if err := chromedp.Do(session); err != nil {
				t.Fatalf("opening a browser context: %v", err)
			}
			tc.run(t, session)
		})
	}
}

// startBrowser starts the headless Chromium the page tests share: Debian's
// chromium, or the one CHROMIUM names.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	if os.Getenv("CHAT_SKIP_BROWSER") == "1" {
		t.Skipf("SKIPPING all %d browser tests, because CHAT_SKIP_BROWSER=1", len(browserTests))
	}
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path, _ = exec.LookPath("chromium")
	}
	if path == "" {
		t.Fatal("chromium is not installed, so the browser tests cannot run: " +
			"apt-get install chromium (./test.sh does), set CHROMIUM to its path, " +
			"or set CHAT_SKIP_BROWSER=1 to skip them")
	}
	dir := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		// Chromium's own temporary and crash files land here too.
		chromedp.Env("TMPDIR="+dir, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config")),
		chromedp.Flag("crash-dumps-dir", filepath.Join(dir, "crashes")),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1000, 750),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// newTab opens a tab in the test's browser context. With -screenshots, a
// failed test's tabs are saved in testdata/screenshots.
func newTab(t *testing.T, session context.Context, name string) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(session)
	t.Cleanup(func() {
		if t.Failed() && *screenshots {
			shotCtx, done := context.WithTimeout(tab, 5*time.Second)
			defer done()
			if png, err := chromedp.Run(shotCtx, chromedp.CaptureScreenshot()); err == nil {
				dir := filepath.Join("testdata", "screenshots")
				os.MkdirAll(dir, 0o755)
				file := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+name+".png")
				if os.WriteFile(file, png, 0o644) == nil {
					t.Logf("screenshot of %s: %s", name, file)
				}
			}
		}
		cancel()
	})
	if err := chromedp.Do(tab); err != nil {
		t.Fatal(err)
	}
	return tab
}

// run runs browser steps with a deadline.
func run(t *testing.T, tab context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// get runs a browser action that returns a value, with a deadline.
func get[T any](t *testing.T, tab context.Context, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// pressEnter presses Enter in the focused element as a keyboard does: one
// key-down that carries the text, so that the page can cancel it. (chromedp's
// key helpers send the text as a separate event that no handler can cancel.)
func pressEnter(shift bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		var modifiers int64
		if shift {
			modifiers = int64(kb.ModifierShift)
		}
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeKeyDown, input.DispatchKeyEventTypeKeyUp} {
			ev := input.DispatchKeyEventParams{Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, Modifiers: modifiers}
			if typ == input.DispatchKeyEventTypeKeyDown {
				ev.Text, ev.UnmodifiedText = "\r", "\r"
			}
			if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, ev); err != nil {
				return err
			}
		}
		return nil
	})
}

// shownMessage is a message as the page shows it.
type shownMessage struct {
	ID   string `json:"id"`
	User string `json:"user"`
	Text string `json:"text"`
}

const readMessages = `[...document.querySelectorAll('#messages li[data-id]')].map(li => ({
	id: li.dataset.id, user: li.querySelector('.user').textContent, text: li.querySelector('.text').textContent}))`

// waitMessages waits until the page shows at least n messages and returns
// them.
func waitMessages(t *testing.T, tab context.Context, n int) []shownMessage {
	t.Helper()
	var got []shownMessage
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = get(t, tab, chromedp.Evaluate[[]shownMessage](readMessages))
		if len(got) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) < n {
		t.Fatalf("the page shows %d messages, want %d: %+v", len(got), n, got)
	}
	return got
}

// waitShown waits until the element selector picks is visible.
func waitShown(t *testing.T, tab context.Context, selector string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(selector))); err != nil {
		t.Fatalf("the page does not show %s: %v", selector, err)
	}
}

// waitState waits for the connection state the page shows.
func waitState(t *testing.T, tab context.Context, want string) {
	t.Helper()
	waitShown(t, tab, fmt.Sprintf(`#status[data-state=%q]`, want))
}

func shownIDs(msgs []shownMessage) string {
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	return strings.Join(ids, ",")
}

// watchStates makes the page record every state its status shows from now
// on, so that a test sees a state that lasts less than one of its polls.
func watchStates(t *testing.T, tab context.Context) {
	t.Helper()
	get(t, tab, chromedp.Evaluate[bool](`(() => {
		const status = document.getElementById('status');
		window.shownStates = [status.dataset.state];
		new MutationObserver(() => {
			const s = status.dataset.state;
			if (shownStates[shownStates.length - 1] !== s) shownStates.push(s);
		}).observe(status, {attributes: true, attributeFilter: ['data-state']});
		return true;
	})()`))
}

// waitStates waits until the states the page showed since watchStates
// include want, in that order, and returns them all.
func waitStates(t *testing.T, tab context.Context, want ...string) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := get(t, tab, chromedp.Evaluate[[]string](`window.shownStates`))
		rest := want
		for _, s := range got {
			if len(rest) > 0 && s == rest[0] {
				rest = rest[1:]
			}
		}
		if len(rest) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page showed the states %v, want %v among them in order", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wire is what the server sent to a tab's EventSources, as the browser's
// network layer received it: an oracle outside the page, which drops
// repeated ids itself.
type wire struct {
	mu     sync.Mutex
	names  []string // event names, in order of arrival
	idList []string // message ids, in order of arrival
}

func watchWire(t *testing.T, tab context.Context) *wire {
	t.Helper()
	w := new(wire)
	err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*network.EventEventSourceMessageReceived); ok {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.names = append(w.names, e.EventName)
			if e.EventName == "message" {
				w.idList = append(w.idList, e.EventID)
			}
		}
	})
	if err == nil {
		_, err = chromedp.Call(tab, network.Enable, network.EnableParams{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *wire) ids() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.idList, ",")
}

func (w *wire) events() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.names)
}

// interceptor stands between a tab and the server: it pauses the requests
// that match its patterns, and the test answers each, in a goroutine of its
// own, by passing it on, refusing it or failing it as a network would.
type interceptor struct{ tab context.Context }

func intercept(t *testing.T, tab context.Context, answer func(i interceptor, ev *fetch.EventRequestPaused), patterns ...*fetch.RequestPattern) {
	t.Helper()
	i := interceptor{tab}
	err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*fetch.EventRequestPaused); ok {
			go answer(i, e)
		}
	})
	if err == nil {
		_, err = chromedp.Call(tab, fetch.Enable, fetch.EnableParams{Patterns: patterns})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// The answers' errors are ignored: they come when the tab has closed.

func (i interceptor) pass(ev *fetch.EventRequestPaused) {
	if ev.ResponseStatusCode != 0 || ev.ResponseErrorReason != "" {
		chromedp.Call(i.tab, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: ev.RequestID})
		return
	}
	chromedp.Call(i.tab, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
}

// refuse answers as the handler refuses: JSON, with Retry-After.
func (i interceptor) refuse(ev *fetch.EventRequestPaused, status int, retryAfter string) {
	chromedp.Call(i.tab, fetch.FulfillRequest, fetch.FulfillRequestParams{
		RequestID:    ev.RequestID,
		ResponseCode: int64(status),
		ResponseHeaders: []*fetch.HeaderEntry{
			{Name: "Content-Type", Value: "application/json"},
			{Name: "Retry-After", Value: retryAfter},
		},
		Body: fmt.Appendf(nil, `{"error":"refused with %d by the test"}`, status),
	})
}

func (i interceptor) fail(ev *fetch.EventRequestPaused) {
	chromedp.Call(i.tab, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionRefused})
}

// header returns a request header by its name, in any case.
func header(ev *fetch.EventRequestPaused, name string) string {
	for k, v := range ev.Request.Headers {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

var (
	streamRequests = &fetch.RequestPattern{URLPattern: "*/stream/*", ResourceType: network.ResourceTypeEventSource}
	postRequests   = &fetch.RequestPattern{URLPattern: "*/room/*", ResourceType: network.ResourceTypeFetch}
)

// stored returns the ids of the messages the server keeps for room.
func stored(t *testing.T, room string) string {
	t.Helper()
	resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "")
	if resp.status == http.StatusNotFound {
		return ""
	}
	var list struct{ Messages []rooms.Message }
	if err := json.Unmarshal([]byte(resp.body), &list); resp.status != http.StatusOK || err != nil {
		t.Fatalf("history of %s: %d %s", room, resp.status, resp.body)
	}
	return ids(list.Messages)
}

// pollUntil polls cond until it holds, failing the test after d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// testTwoPages: two pages in one room see each other's messages, in the
// same order; Enter sends, Shift+Enter adds a line; the name is remembered.
// At the site root and under /chat/.
func testTwoPages(t *testing.T, browser context.Context) {
	startCaddy(t, config{})
	for name, base := range map[string]string{"root": rootSite, "prefix": chatBase} {
		t.Run(name, func(t *testing.T) {
			room := roomFor(t, "a")
			url := base + "/room/" + room
			a, b := newTab(t, browser, "a"), newTab(t, browser, "b")
			run(t, a, chromedp.Navigate(url))
			run(t, b, chromedp.Navigate(url))
			waitState(t, a, "live")
			waitState(t, b, "live")
			run(t, a,
				chromedp.SendKeys(chromedp.CSS("#user"), "alice"),
				chromedp.SendKeys(chromedp.CSS("#message"), "hello from a"), pressEnter(false))
			waitMessages(t, a, 1) // one post at a time: the box takes no text while one is in flight
			run(t, b,
				chromedp.SendKeys(chromedp.CSS("#user"), "bob"),
				chromedp.SendKeys(chromedp.CSS("#message"), "line one"), pressEnter(true),
				chromedp.SendKeys(chromedp.CSS("#message"), "line two"), pressEnter(false))
			waitMessages(t, a, 2)
			run(t, a, chromedp.SendKeys(chromedp.CSS("#message"), "and again"), pressEnter(false))
			gotA, gotB := waitMessages(t, a, 3), waitMessages(t, b, 3)
			if shownIDs(gotA) != shownIDs(gotB) {
				t.Errorf("the pages disagree:\n%+v\n%+v", gotA, gotB)
			}
			want := map[string]string{"hello from a": "alice", "line one\nline two": "bob", "and again": "alice"}
			for _, m := range gotA {
				if want[m.Text] != m.User {
					t.Errorf("shown %+v, want one of %v", m, want)
				}
			}
			// Both tabs share the browser context's storage: the last name
			// typed wins.
			cleared := get(t, b, chromedp.Value(chromedp.CSS("#message")))
			run(t, b, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#messages li[data-id]")))
			remembered := get(t, b, chromedp.Value(chromedp.CSS("#user")))
			if remembered != "bob" || cleared != "" {
				t.Errorf("after sending: name remembered %q, message box %q; want bob and empty", remembered, cleared)
			}
		})
	}
}

// testReconnect: when the server ends the stream (here by a reload), the
// page shows it is reconnecting, then live, and shows every message once.
// What the server sent is counted on the wire, so a page that resumed from
// the wrong place cannot hide it by dropping repeats.
func testReconnect(t *testing.T, browser context.Context) {
	startCaddy(t, config{global: "heartbeat 15s"})
	room := roomFor(t, "a")
	var rendered []string // in the page as the server renders it
	for i := range 3 {
		rendered = append(rendered, postJSON(t, rootSite, room, "api", fmt.Sprint("before ", i)).ID)
	}
	tab := newTab(t, browser, "page")
	onWire := watchWire(t, tab)
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	watchStates(t, tab)
	streamed := []string{postJSON(t, rootSite, room, "api", "live").ID}
	waitMessages(t, tab, 4)

	reload(t, config{global: "heartbeat 20s"})
	for i := range 3 {
		streamed = append(streamed, postJSON(t, rootSite, room, "api", fmt.Sprint("during reconnect ", i)).ID)
	}
	states := waitStates(t, tab, "live", "reconnecting", "live")
	t.Logf("states shown: %v", states)
	streamed = append(streamed, postJSON(t, rootSite, room, "api", "after").ID)
	want := append(rendered, streamed...)
	waitMessages(t, tab, len(want))
	time.Sleep(200 * time.Millisecond) // a duplicate would show up by now
	if got := waitMessages(t, tab, len(want)); shownIDs(got) != strings.Join(want, ",") {
		t.Errorf("the page shows %s\nwant %s", shownIDs(got), strings.Join(want, ","))
	}
	if got := onWire.ids(); got != strings.Join(streamed, ",") {
		t.Errorf("the server sent the page %s\nwant each of %s once, in order", got, strings.Join(streamed, ","))
	}
}

// testRefusedReconnect: when reconnecting streams are refused (503, 429),
// the page says it is offline and keeps trying with a growing, jittered
// backoff; once the server takes streams again it is live and has missed
// nothing.
func testRefusedReconnect(t *testing.T, browser context.Context) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			startCaddy(t, config{global: "heartbeat 15s"})
			room := roomFor(t, "a")
			tab := newTab(t, browser, "page")
			onWire := watchWire(t, tab)
			var refusing atomic.Bool
			var mu sync.Mutex
			var refusedAt []time.Time
			intercept(t, tab, func(i interceptor, ev *fetch.EventRequestPaused) {
				if !refusing.Load() {
					i.pass(ev)
					return
				}
				mu.Lock()
				refusedAt = append(refusedAt, time.Now())
				mu.Unlock()
				i.refuse(ev, status, "5")
			}, streamRequests)
			refusals := func() []time.Time {
				mu.Lock()
				defer mu.Unlock()
				return slices.Clone(refusedAt)
			}
			run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
			waitState(t, tab, "live")
			watchStates(t, tab)
			want := []string{postJSON(t, rootSite, room, "api", "before").ID}
			waitMessages(t, tab, 1)

			refusing.Store(true)
			reload(t, config{global: "heartbeat 20s"})
			for i := range 3 {
				want = append(want, postJSON(t, rootSite, room, "api", fmt.Sprint("while refused ", i)).ID)
			}
			waitStates(t, tab, "live", "offline")
			if text := get(t, tab, chromedp.Text(chromedp.CSS("#status"))); !strings.Contains(text, "retrying") {
				t.Errorf("while refused the status says %q, want it to say it is retrying", text)
			}
			pollUntil(t, 15*time.Second, "three refused reconnects", func() bool { return len(refusals()) >= 3 })
			refusing.Store(false)
			waitStates(t, tab, "live", "offline", "live")
			want = append(want, postJSON(t, rootSite, room, "api", "after").ID)
			waitMessages(t, tab, len(want))
			time.Sleep(200 * time.Millisecond)
			if got := waitMessages(t, tab, len(want)); shownIDs(got) != strings.Join(want, ",") {
				t.Errorf("the page shows %s\nwant %s", shownIDs(got), strings.Join(want, ","))
			}
			if got := onWire.ids(); got != strings.Join(want, ",") {
				t.Errorf("the server sent the page %s\nwant each of %s once, in order", got, strings.Join(want, ","))
			}
			// The first refusal follows the stream's retry hint; then the
			// page waits half to all of 1 s, 2 s, 4 s...
			at := refusals()
			for k := 1; k < len(at); k++ {
				gap, full := at[k].Sub(at[k-1]), time.Second<<(k-1)
				t.Logf("refusal %d came %v after the one before (backoff %v-%v)", k+1, gap.Round(time.Millisecond), full/2, full)
				if gap < full/2-50*time.Millisecond || gap > full+500*time.Millisecond {
					t.Errorf("refusal %d came %v after the one before, want %v to %v", k+1, gap, full/2, full)
				}
			}
		})
	}
}

// testResetNotice: a page whose resume position the server no longer holds
// says that messages may have been missed: with history 0, and when the
// page was away while more messages came than history keeps.
func testResetNotice(t *testing.T, browser context.Context) {
	notice := func(t *testing.T, tab context.Context) (string, bool) {
		return get(t, tab, chromedp.Text(chromedp.CSS("#notice"))),
			get(t, tab, chromedp.Evaluate[bool](`!document.getElementById('notice').hidden`))
	}
	t.Run("history 0", func(t *testing.T) {
		startCaddy(t, config{global: "history 0\n\t\theartbeat 15s"})
		room := roomFor(t, "a")
		tab := newTab(t, browser, "page")
		onWire := watchWire(t, tab)
		run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
		waitState(t, tab, "live")
		watchStates(t, tab)
		postJSON(t, rootSite, room, "api", "kept by nobody")
		waitMessages(t, tab, 1)
		if text, shown := notice(t, tab); shown {
			t.Fatalf("before any reset the page says %q", text)
		}
		reload(t, config{global: "history 0\n\t\theartbeat 20s"})
		postJSON(t, rootSite, room, "api", "missed while reconnecting")
		waitStates(t, tab, "live", "reconnecting", "live")
		waitShown(t, tab, "#notice")
		if text, _ := notice(t, tab); !strings.Contains(text, "missed") {
			t.Errorf("after the reset the notice says %q, want it to say messages were missed", text)
		}
		events := slices.DeleteFunc(onWire.events(), func(name string) bool { return name == "presence" })
		if !slices.Equal(events, []string{"message", "reset"}) {
			t.Errorf("the server sent %v, want a message and then a reset", events)
		}
		if got := waitMessages(t, tab, 1); len(got) != 1 {
			t.Errorf("the page shows %+v, want only the message it received live", got)
		}
	})
	t.Run("away longer than history", func(t *testing.T) {
		startCaddy(t, config{global: "history 2\n\t\theartbeat 15s"})
		room := roomFor(t, "a")
		var posted []string
		for i := range 3 {
			posted = append(posted, postJSON(t, rootSite, room, "api", fmt.Sprint("before ", i)).ID)
		}
		tab := newTab(t, browser, "page")
		var refusing atomic.Bool
		intercept(t, tab, func(i interceptor, ev *fetch.EventRequestPaused) {
			if refusing.Load() {
				i.refuse(ev, http.StatusServiceUnavailable, "5")
				return
			}
			i.pass(ev)
		}, streamRequests)
		run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
		waitState(t, tab, "live")
		watchStates(t, tab)
		refusing.Store(true)
		reload(t, config{global: "history 2\n\t\theartbeat 20s"})
		for i := range 3 {
			posted = append(posted, postJSON(t, rootSite, room, "api", fmt.Sprint("while away ", i)).ID)
		}
		waitStates(t, tab, "live", "offline")
		if text, shown := notice(t, tab); shown {
			t.Fatalf("before the page is back, it says %q", text)
		}
		refusing.Store(false)
		waitStates(t, tab, "live", "offline", "live")
		waitShown(t, tab, "#notice")
		// The page rendered the 2 messages history kept; of the 3 that came
		// while it was away, history kept the last 2.
		want := []string{posted[1], posted[2], posted[4], posted[5]}
		if got := waitMessages(t, tab, 4); shownIDs(got) != strings.Join(want, ",") {
			t.Errorf("the page shows %s, want %s", shownIDs(got), strings.Join(want, ","))
		}
	})
}

// testDoubleEnter: while a post is in flight the form takes no other, so
// pressing Enter twice posts once.
func testDoubleEnter(t *testing.T, browser context.Context) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	tab := newTab(t, browser, "page")
	var posts atomic.Int32
	arrived, release := make(chan struct{}, 10), make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	defer free()
	intercept(t, tab, func(i interceptor, ev *fetch.EventRequestPaused) {
		posts.Add(1)
		arrived <- struct{}{}
		<-release
		i.pass(ev)
	}, postRequests)
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	run(t, tab, chromedp.SendKeys(chromedp.CSS("#message"), "once"), pressEnter(false))
	select {
	case <-arrived:
	case <-time.After(wait):
		t.Fatal("Enter did not post")
	}
	const busy = `document.querySelector('#compose button[type=submit]').disabled && document.getElementById('message').readOnly`
	busyInFlight := get(t, tab, chromedp.Evaluate[bool](busy))
	run(t, tab, pressEnter(false))
	time.Sleep(300 * time.Millisecond) // a second post would be paused by now
	free()
	got := waitMessages(t, tab, 1)
	time.Sleep(300 * time.Millisecond)
	if n := posts.Load(); n != 1 {
		t.Errorf("two Enters made %d posts, want 1", n)
	}
	if s := stored(t, room); s != got[0].ID {
		t.Errorf("the server keeps %q, want the one message %s", s, got[0].ID)
	}
	if !busyInFlight || get(t, tab, chromedp.Evaluate[bool](busy)) {
		t.Errorf("the send button and box are busy in flight: %v, want true, and not after", busyInFlight)
	}
	if box := get(t, tab, chromedp.Value(chromedp.CSS("#message"))); box != "" {
		t.Errorf("after sending the box holds %q", box)
	}
}

// testSendFails: a post that fails for a reason that may pass is retried
// with the same Idempotency-Key, so the server stores it once; when the last
// try fails, or the server refuses the message itself, the page says so in
// an alert and keeps the text: the site's screen's reason too.
func testSendFails(t *testing.T, browser context.Context) {
	screened := startSiteScreen(t)
	for _, tc := range []struct {
		name     string
		handler  string
		message  string
		stage    fetch.RequestStage
		answer   func(i interceptor, ev *fetch.EventRequestPaused, attempt int32)
		attempts int32
		stored   bool   // whether the server ends up with the message
		alert    string // in what the page says, "" for nothing
	}{{
		name:    "answer lost",
		message: "sent once",
		stage:   fetch.RequestStageResponse, // the server has it by then
		answer: func(i interceptor, ev *fetch.EventRequestPaused, attempt int32) {
			if attempt == 1 {
				i.fail(ev)
				return
			}
			i.pass(ev)
		},
		attempts: 2, stored: true,
	}, {
		name:    "server busy",
		message: "after a wait",
		stage:   fetch.RequestStageRequest,
		answer: func(i interceptor, ev *fetch.EventRequestPaused, attempt int32) {
			if attempt <= 2 {
				i.refuse(ev, http.StatusServiceUnavailable, "1")
				return
			}
			i.pass(ev)
		},
		attempts: 3, stored: true,
	}, {
		name:     "server unreachable",
		message:  "kept for later",
		stage:    fetch.RequestStageRequest,
		answer:   func(i interceptor, ev *fetch.EventRequestPaused, _ int32) { i.fail(ev) },
		attempts: 4, alert: "cannot be reached",
	}, {
		name:     "message refused",
		handler:  "max_message_size 8",
		message:  "more than eight bytes",
		stage:    fetch.RequestStageRequest,
		answer:   func(i interceptor, ev *fetch.EventRequestPaused, _ int32) { i.pass(ev) },
		attempts: 1, alert: "message is over 8 bytes",
	}, {
		name:     "refused by the screen",
		handler:  fmt.Sprintf("screen %s {\n\t\t\tsecret %s\n\t\t}", screened.URL, screenSecret),
		message:  "buy spam",
		stage:    fetch.RequestStageRequest,
		answer:   func(i interceptor, ev *fetch.EventRequestPaused, _ int32) { i.pass(ev) },
		attempts: 1, alert: "no spam, please",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			startCaddy(t, config{handler: tc.handler})
			room := roomFor(t, "a")
			tab := newTab(t, browser, "page")
			var attempts atomic.Int32
			var mu sync.Mutex
			keys := map[string]bool{}
			intercept(t, tab, func(i interceptor, ev *fetch.EventRequestPaused) {
				mu.Lock()
				keys[header(ev, "Idempotency-Key")] = true
				mu.Unlock()
				tc.answer(i, ev, attempts.Add(1))
			}, &fetch.RequestPattern{URLPattern: postRequests.URLPattern, ResourceType: postRequests.ResourceType, RequestStage: tc.stage})
			run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
			waitState(t, tab, "live")
			run(t, tab, chromedp.SendKeys(chromedp.CSS("#message"), tc.message), pressEnter(false))
			if tc.alert != "" {
				waitShown(t, tab, "#send-error[role=alert]")
				if text := get(t, tab, chromedp.Text(chromedp.CSS("#send-error"))); !strings.Contains(text, tc.alert) {
					t.Errorf("the alert says %q, want it to say %q", text, tc.alert)
				}
				if box := get(t, tab, chromedp.Value(chromedp.CSS("#message"))); box != tc.message {
					t.Errorf("after the failure the box holds %q, want the text typed, %q", box, tc.message)
				}
			} else {
				waitMessages(t, tab, 1)
				// The stream may show the message before the page has its
				// answer: a lost one is retried first.
				pollUntil(t, 15*time.Second, "the box empties once the message is sent", func() bool {
					return get(t, tab, chromedp.Value(chromedp.CSS("#message"))) == ""
				})
				if get(t, tab, chromedp.Evaluate[bool](`!document.getElementById('send-error').hidden`)) {
					t.Error("a message that was sent shows an error")
				}
			}
			time.Sleep(300 * time.Millisecond) // another try would be paused by now
			if n := attempts.Load(); n != tc.attempts {
				t.Errorf("the page tried %d times, want %d", n, tc.attempts)
			}
			mu.Lock()
			if len(keys) != 1 || keys[""] {
				t.Errorf("the tries carried the Idempotency-Keys %v, want one key", keys)
			}
			mu.Unlock()
			if s := stored(t, room); (s != "") != tc.stored || strings.Contains(s, ",") {
				t.Errorf("the server keeps %q, want the message stored %v, once", s, tc.stored)
			}
		})
	}
}

// testHostileText: markup in messages and names is shown as text, whether
// rendered by the server or added live. The DOM is the check: the CSP would
// block an inline handler even if one got in, so no dialog proves nothing
// on its own.
func testHostileText(t *testing.T, browser context.Context) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	const img, script = `<img src=x onerror=alert(1)>`, `<script>alert(2)</script>`
	postJSON(t, rootSite, room, script, img)
	tab := newTab(t, browser, "page")
	var dialogs atomic.Int32
	err := chromedp.Listen(tab, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
			go chromedp.Call(tab, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	postJSON(t, rootSite, room, script, img+" live")
	got := waitMessages(t, tab, 2)
	for i, wantText := range []string{img, img + " live"} {
		if got[i].User != script || got[i].Text != wantText {
			t.Errorf("message %d shown as %+v, want the literal text", i, got[i])
		}
	}
	elements := get(t, tab, chromedp.Evaluate[int](`document.querySelectorAll('#messages img, #messages script').length`))
	if elements != 0 || dialogs.Load() != 0 {
		t.Errorf("%d elements and %d dialogs came from message text", elements, dialogs.Load())
	}
}

// testWithoutScript: with JavaScript off, the room list's form opens a room
// and the room's form posts, landing back on the room page, which shows the
// time in UTC.
func testWithoutScript(t *testing.T, browser context.Context) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	tab := newTab(t, browser, "page")
	if _, err := chromedp.Call(tab, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	run(t, tab,
		chromedp.Navigate(chatBase+"/"),
		chromedp.SetValue(chromedp.CSS("#room-name"), room),
		chromedp.Submit(chromedp.CSS("#room-name")),
		chromedp.WaitVisible(chromedp.CSS("#compose")),
		chromedp.SetValue(chromedp.CSS("#user"), "nojs"),
		chromedp.SetValue(chromedp.CSS("#message"), "posted without script"),
		chromedp.Submit(chromedp.CSS("#message")),
		chromedp.WaitVisible(chromedp.CSS("#messages li[data-id]")),
	)
	location := get(t, tab, chromedp.Location())
	if location != chatBase+"/room/"+room {
		t.Errorf("after posting the page is %s, want the room page", location)
	}
	got := waitMessages(t, tab, 1)
	if got[0].User != "nojs" || got[0].Text != "posted without script" {
		t.Errorf("shown %+v", got[0])
	}
	// No script turns the time into the reader's: it says whose it is.
	if clock := get(t, tab, chromedp.Text(chromedp.CSS("#messages li[data-id] time"))); !strings.HasSuffix(clock, " UTC") {
		t.Errorf("without script the message's time reads %q, want it in UTC, saying so", clock)
	}
}

// testRoomDeleted: the page tells its reader when the room is deleted, and
// offers the delete button only where deleting is allowed.
func testRoomDeleted(t *testing.T, browser context.Context) {
	startCaddy(t, config{handler: "allow_delete"})
	room := roomFor(t, "a")
	tab := newTab(t, browser, "page")
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	run(t, tab, chromedp.WaitVisible(chromedp.CSS("#delete")))
	do(t, "DELETE", rootSite+"/room/"+room, "")
	waitState(t, tab, "closed")
	notice := get(t, tab, chromedp.Text(chromedp.CSS("#notice")))
	if !strings.Contains(notice, "deleted") {
		t.Errorf("notice %q, want it to say the room was deleted", notice)
	}
}

// testRoomList: the room list shows each room with its live subscriber
// count, and opens a room from its form.
func testRoomList(t *testing.T, browser context.Context) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	page := newTab(t, browser, "room")
	run(t, page, chromedp.Navigate(chatBase+"/room/"+room))
	waitState(t, page, "live")
	list := newTab(t, browser, "list")
	run(t, list, chromedp.Navigate(chatBase+"/"))
	text := strings.Join(strings.Fields(get(t, list, chromedp.Text(chromedp.CSS("#rooms")))), " ")
	if !strings.Contains(text, room+" 1 online") {
		t.Errorf("the room list says %q, want %s with 1 online", text, room)
	}
	other := roomFor(t, "b")
	run(t, list,
		chromedp.SendKeys(chromedp.CSS("#room-name"), other), pressEnter(false),
		chromedp.WaitVisible(chromedp.CSS("#compose")))
	if location := get(t, list, chromedp.Location()); location != chatBase+"/room/"+other {
		t.Errorf("the form opened %s, want the room page of %s", location, other)
	}
}

// inTokyo makes the tab's clock Tokyo's and its locale British English,
// whose short times read as Go's "15:04".
func inTokyo(t *testing.T, tab context.Context) *time.Location {
	t.Helper()
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err == nil {
		_, err = chromedp.Call(tab, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Tokyo"})
	}
	if err == nil {
		_, err = chromedp.Call(tab, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: "en_GB"})
	}
	if err != nil {
		t.Fatal(err)
	}
	return tokyo
}

// listEntry is an item of a page's message list: a day separator or a
// message.
type listEntry struct {
	Day      string `json:"day"` // the separator's date, YYYY-MM-DD
	ID       string `json:"id"`
	User     string `json:"user"`
	Clock    string `json:"clock"`    // the time shown
	DateTime string `json:"datetime"` // the time element's datetime
	Title    string `json:"title"`    // the time shown on hover: on a message, its full time; on a separator, its text
	Marked   bool   `json:"marked"`
}

func (e listEntry) String() string {
	if e.Day != "" {
		return "day " + e.Day
	}
	return e.ID + " at " + e.Clock
}

const readList = `[...document.querySelectorAll('#messages > li')].map(li => {
	const time = li.querySelector('time');
	return li.dataset.id
		? {id: li.dataset.id, user: li.querySelector('.user').textContent, clock: time.textContent,
			datetime: time.dateTime, title: time.title, marked: li.querySelector('.verified') !== null}
		: {day: time.dateTime, title: li.textContent};
})`

// waitList waits until the page's list holds n messages, and returns all
// its items.
func waitList(t *testing.T, tab context.Context, n int) []listEntry {
	t.Helper()
	waitMessages(t, tab, n)
	return get(t, tab, chromedp.Evaluate[[]listEntry](readList))
}

// spoken counts the nodes in the element selector picks that assistive
// technology announces by the accessible name name.
func spoken(t *testing.T, tab context.Context, selector, name string) int {
	t.Helper()
	el, err := chromedp.Call(tab, runtime.Evaluate, runtime.EvaluateParams{Expression: fmt.Sprintf("document.querySelector(%q)", selector)})
	if err != nil || el.Result == nil || el.Result.ObjectID == "" {
		t.Fatalf("finding %s: %v", selector, err)
	}
	found, err := chromedp.Call(tab, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{ObjectID: el.Result.ObjectID, AccessibleName: name})
	if err != nil {
		t.Fatalf("the accessibility tree of %s: %v", selector, err)
	}
	n := 0
	for _, node := range found.Nodes {
		if !node.Ignored {
			n++
		}
	}
	return n
}

// testLocalTimes: a reader in Tokyo sees each message at its Tokyo clock
// time, whether the server rendered it or it came live, with the full time
// in its title and the Tokyo date before the first message. The signed-in
// alice's messages carry the verified mark, which a screen reader announces;
// an anonymous "alice" (allowed here by reserve_names off) does not.
func testLocalTimes(t *testing.T, browser context.Context) {
	startCaddy(t, trustConfig(t, "", "reserve_names off"))
	room := roomFor(t, "a")
	anon, alice := newPoster(t, "", 2), newPoster(t, "alice", 3)
	posted := []response{
		anon.post(t, room, "alice", "I am alice", ""),
		alice.post(t, room, "", "signed in", ""),
	}
	tab := newTab(t, browser, "page")
	tokyo := inTokyo(t, tab)
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	posted = append(posted,
		anon.post(t, room, "alice", "I am alice, live", ""),
		alice.post(t, room, "", "signed in, live", ""))

	var want []listEntry
	day := ""
	for _, r := range posted {
		if r.status != http.StatusCreated {
			t.Fatalf("posting: %d %s", r.status, r.body)
		}
		at, err := time.Parse(time.RFC3339Nano, r.json["time"].(string))
		if err != nil {
			t.Fatal(err)
		}
		local := at.In(tokyo)
		if d := local.Format(time.DateOnly); d != day {
			day = d
			want = append(want, listEntry{Day: d, Title: local.Format("2 January 2006")})
		}
		want = append(want, listEntry{ID: r.json["id"].(string), User: "alice", Clock: local.Format("15:04"),
			DateTime: r.json["time"].(string), Title: local.Format("2 January 2006 at 15:04:05"), Marked: r.json["verified"] == true})
	}
	got := waitList(t, tab, len(posted))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("in Tokyo the page shows %v\nwant %v", got, want)
	}
	for i, g := range got {
		w := want[i]
		if g.Day != "" {
			if !strings.Contains(g.Title, w.Title) {
				t.Errorf("the separator of %s reads %q, want it to name %s", g.Day, g.Title, w.Title)
			}
			continue
		}
		if g.User != w.User || g.DateTime != w.DateTime || !strings.Contains(g.Title, w.Title) {
			t.Errorf("message %s shown by %q at %s, titled %q; want by %q at %s, titled with %s",
				g.ID, g.User, g.DateTime, g.Title, w.User, w.DateTime, w.Title)
		}
		mark := spoken(t, tab, fmt.Sprintf("#messages li[data-id=%q]", g.ID), "verified")
		if want := map[bool]int{true: 1, false: 0}[w.Marked]; g.Marked != w.Marked || mark != want {
			t.Errorf("message %s: marked %v, %d nodes announced as verified; want %v and %d", g.ID, g.Marked, mark, w.Marked, want)
		}
	}
}

// testLocalDays: the page draws day separators by the reader's date, not the
// server's. Three messages on two UTC days fall on two other Tokyo days; a
// message that comes live on a later day gets a separator of its own. The
// history is a page rendered here, since real messages cannot be posted on
// chosen days.
func testLocalDays(t *testing.T, browser context.Context) {
	startCaddy(t, config{})
	room := roomFor(t, "a")
	history := ui.Room{Name: room}
	for i, at := range []string{"2025-01-01T14:30:00Z", "2025-01-01T15:30:00Z", "2025-01-02T01:00:00Z"} {
		when, _ := time.Parse(time.RFC3339, at)
		history.Messages = append(history.Messages, ui.Message{ID: fmt.Sprint("old-", i+1), User: "bob", Text: at, Time: when})
	}
	var rendered bytes.Buffer
	if err := ui.RenderRoom(&rendered, history); err != nil {
		t.Fatal(err)
	}
	tab := newTab(t, browser, "page")
	tokyo := inTokyo(t, tab)
	intercept(t, tab, func(i interceptor, ev *fetch.EventRequestPaused) {
		chromedp.Call(i.tab, fetch.FulfillRequest, fetch.FulfillRequestParams{
			RequestID:    ev.RequestID,
			ResponseCode: http.StatusOK,
			ResponseHeaders: []*fetch.HeaderEntry{
				{Name: "Content-Type", Value: "text/html; charset=utf-8"},
				{Name: "Content-Security-Policy", Value: pageCSP},
			},
			Body: rendered.Bytes(),
		})
	}, &fetch.RequestPattern{URLPattern: "*/room/*", ResourceType: network.ResourceTypeDocument})
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	live := postJSON(t, rootSite, room, "alice", "today")
	got := waitList(t, tab, 4)
	want := fmt.Sprintf("[day 2025-01-01 old-1 at 23:30 day 2025-01-02 old-2 at 00:30 old-3 at 10:00 day %s %s at %s]",
		live.Time.In(tokyo).Format(time.DateOnly), live.ID, live.Time.In(tokyo).Format("15:04"))
	if fmt.Sprint(got) != want {
		t.Errorf("in Tokyo the page shows %v\nwant %s", got, want)
	}
}

// testScreenshots renders the screenshots of a room in README.md and
// docs/widget.md, on a desktop and on a phone, with alice signed in
// (verified). TestBrowser runs it only with -screenshots.
func testScreenshots(t *testing.T, browser context.Context) {
	demo, err := os.ReadFile(filepath.Join("www", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := trustConfig(t, "", "")
	// The demo page, with the chat at the site root instead of /chat/.
	cfg.site += "\n\t" + hostSite(t, "default-src 'self'; style-src 'self' 'unsafe-inline'", map[string]string{
		"index.html": strings.ReplaceAll(string(demo), `src="/chat/widget.js"`, `src="/widget.js"`),
	})
	startCaddy(t, cfg)
	room := "lobby"
	alice := newPoster(t, "alice", 3)
	for _, m := range [][2]string{
		{"alice", "Morning! Is the release still on for today?"},
		{"bob", "Yes. Tagging it after lunch."},
		{"carol", "Changelog is ready:\n- resumable streams\n- room history API"},
		{"alice", "<b>Great</b>, thanks both"},
	} {
		if m[0] == "alice" {
			alice.post(t, room, "", m[1], "")
		} else {
			postJSON(t, chatBase, room, m[0], m[1])
		}
	}
	for name, size := range map[string][2]int64{"desktop": {1000, 640}, "phone": {390, 700}} {
		tab := newTab(t, browser, name)
		run(t, tab,
			chromedp.EmulateViewport(size[0], size[1]),
			chromedp.Navigate(chatBase+"/room/"+room))
		waitState(t, tab, "live")
		run(t, tab, chromedp.SetValue(chromedp.CSS("#user"), "dave"), chromedp.SendKeys(chromedp.CSS("#message"), "On my way"))
		png := get(t, tab, chromedp.CaptureScreenshot())
		if err := os.WriteFile(filepath.Join("docs", "screenshot-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tab := newTab(t, browser, "widget")
	run(t, tab, chromedp.EmulateViewport(800, 900), chromedp.Navigate(rootSite+"/host/index.html"))
	pollUntil(t, 10*time.Second, "the widget is live", func() bool { return widgetState(t, tab, "lobby") == "live" })
	waitWidget(t, tab, "lobby", 4)
	get(t, tab, chromedp.Evaluate[bool](`(() => {
		const root = document.getElementById('lobby').shadowRoot;
		root.querySelector('input.name').value = 'dave';
		root.querySelector('textarea').value = 'Hello from the demo page';
		return true;
	})()`))
	png := get(t, tab, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join("docs", "screenshot-widget.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostSite serves the files of a temporary directory under /host/ on the
// root site, with the Content-Security-Policy csp, as a site owner's
// static pages; chat stays at the site root.
func hostSite(t *testing.T, csp string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "host"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, "host", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("handle /host/* {\n\t\theader Content-Security-Policy %q\n\t\troot * %s\n\t\tfile_server\n\t}", csp, dir)
}

// readWidget reads the messages a <chat-room> shows, by its element id.
func readWidget(id string) string {
	return fmt.Sprintf(`[...document.getElementById(%q).shadowRoot.querySelectorAll('li[data-id]')].map(li => ({
	id: li.dataset.id, user: li.querySelector('.user').textContent, text: li.querySelector('.text').textContent}))`, id)
}

// waitWidget waits until the <chat-room> with id shows at least n messages
// and returns them.
func waitWidget(t *testing.T, tab context.Context, id string, n int) []shownMessage {
	t.Helper()
	var got []shownMessage
	pollUntil(t, 10*time.Second, fmt.Sprintf("%s shows %d messages", id, n), func() bool {
		got = get(t, tab, chromedp.Evaluate[[]shownMessage](readWidget(id)))
		return len(got) >= n
	})
	return got
}

// widgetState is the connection state a <chat-room> shows.
func widgetState(t *testing.T, tab context.Context, id string) string {
	t.Helper()
	return get(t, tab, chromedp.Evaluate[string](fmt.Sprintf(
		`(document.getElementById(%q)?.shadowRoot?.querySelector('.status')?.dataset.state) || ""`, id)))
}

// typeInWidget types text into the message box of the <chat-room> with id
// and presses Enter, as a user does.
func typeInWidget(t *testing.T, tab context.Context, id, text string) {
	t.Helper()
	get(t, tab, chromedp.Evaluate[bool](fmt.Sprintf(
		`(document.getElementById(%q).shadowRoot.querySelector('textarea').focus(), true)`, id)))
	if _, err := chromedp.Call(tab, input.InsertText, input.InsertTextParams{Text: text}); err != nil {
		t.Fatal(err)
	}
	run(t, tab, pressEnter(false))
}

// streamsOpened counts the streams a tab opens, by room, from the network
// events of the browser itself, outside the page.
func streamsOpened(t *testing.T, tab context.Context) func(room string) int {
	t.Helper()
	var mu sync.Mutex
	opened := map[string]int{}
	err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			if _, after, found := strings.Cut(e.Request.URL, "/stream/"); found {
				room, _, _ := strings.Cut(after, "?")
				mu.Lock()
				opened[room]++
				mu.Unlock()
			}
		}
	})
	if err == nil {
		_, err = chromedp.Call(tab, network.Enable, network.EnableParams{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return func(room string) int {
		mu.Lock()
		defer mu.Unlock()
		return opened[room]
	}
}

// recordViolations makes every page the tab loads count the CSP violations
// it reports, in window.violations.
func recordViolations(t *testing.T, tab context.Context) {
	t.Helper()
	_, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.violations = [];
document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective + ' ' + e.blockedURI));`,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testWidget: a static page with a strict CSP and hostile CSS, with three
// <chat-room>: two in room a, one in room b. The widgets go live under the
// CSP without a violation; the page's CSS neither hides nor restyles them;
// the two in room a share one stream; messages flow both ways between a
// widget and the room page open in another browser context, and stay in
// their room.
func testWidget(t *testing.T, browser context.Context) {
	roomA, roomB := roomFor(t, "a"), roomFor(t, "b")
	startCaddy(t, config{site: hostSite(t, "default-src 'self'", map[string]string{
		"page.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<link rel="stylesheet" href="host.css"><script type="module" src="/widget.js"></script></head>
<body><h1>My site</h1>
<chat-room id="a1" room="` + roomA + `" user="carol"></chat-room>
<chat-room id="a2" room="` + roomA + `"></chat-room>
<chat-room id="b" room="` + roomB + `" history="5"></chat-room>
</body></html>`,
		// Everything below body hidden, and every text red and huge.
		"host.css": `body * { display: none !important; }
li, p, span, button, textarea, section { display: none !important; color: red !important; }
* { color: rgb(255, 0, 0) !important; font-size: 40px !important; }`,
	})})
	tab := newTab(t, browser, "host")
	recordViolations(t, tab)
	opened := streamsOpened(t, tab)
	run(t, tab, chromedp.Navigate(rootSite+"/host/page.html"))
	for _, id := range []string{"a1", "a2", "b"} {
		pollUntil(t, 10*time.Second, id+" is live", func() bool { return widgetState(t, tab, id) == "live" })
	}

	other, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	roomPage := newTab(t, other, "room page")
	run(t, roomPage, chromedp.Navigate(rootSite+"/room/"+roomA))
	waitState(t, roomPage, "live")

	typeInWidget(t, tab, "a1", "hello from the widget")
	waitMessages(t, roomPage, 1)
	run(t, roomPage,
		chromedp.SendKeys(chromedp.CSS("#user"), "dave"),
		chromedp.SendKeys(chromedp.CSS("#message"), "hi back"), pressEnter(false))
	onPage := waitMessages(t, roomPage, 2)
	a1, a2 := waitWidget(t, tab, "a1", 2), waitWidget(t, tab, "a2", 2)
	want := []shownMessage{{onPage[0].ID, "carol", "hello from the widget"}, {onPage[1].ID, "dave", "hi back"}}
	if !slices.Equal(onPage, want) || !slices.Equal(a1, want) || !slices.Equal(a2, want) {
		t.Errorf("room page, a1, a2 show\n%+v\n%+v\n%+v\nwant %+v", onPage, a1, a2, want)
	}
	postJSON(t, rootSite, roomB, "erin", "only in b")
	if b := waitWidget(t, tab, "b", 1); len(b) != 1 || b[0].Text != "only in b" {
		t.Errorf("b shows %+v, want only its room's message", b)
	}
	if a1 := get(t, tab, chromedp.Evaluate[[]shownMessage](readWidget("a1"))); len(a1) != 2 {
		t.Errorf("a1 shows %+v after a post to b", a1)
	}
	if na, nb := opened(roomA), opened(roomB); na != 1 || nb != 1 {
		t.Errorf("the page opened %d streams for a and %d for b, want one each", na, nb)
	}

	looks := get(t, tab, chromedp.Evaluate[[]string](`['a1', 'a2', 'b'].map((id) => {
		const el = document.getElementById(id);
		const box = el.shadowRoot.querySelector('section').getBoundingClientRect();
		const text = el.shadowRoot.querySelector('.text');
		return [el.checkVisibility(), box.height > 100, text.checkVisibility(), getComputedStyle(text).color, getComputedStyle(text).fontSize].join(' ');
	})`))
	for i, got := range looks {
		if !strings.HasPrefix(got, "true true true ") || strings.Contains(got, "rgb(255, 0, 0)") || strings.HasSuffix(got, " 40px") {
			t.Errorf("widget %d: visible, tall, text visible, colour, size = %s; the host CSS reached in", i, got)
		}
	}
	if v := get(t, tab, chromedp.Evaluate[[]string](`window.violations`)); len(v) != 0 {
		t.Errorf("CSP violations: %v", v)
	}
}

// testWidgetCrossOrigin: a page on one origin embeds the chat served from
// another. With allow_origins naming the page's origin, the widget goes
// live and posts; without it, the browser refuses it and nothing is posted.
func testWidgetCrossOrigin(t *testing.T, browser context.Context) {
	for _, allow := range []bool{true, false} {
		t.Run(fmt.Sprintf("allowed=%v", allow), func(t *testing.T) {
			room := roomFor(t, "x")
			cfg := config{site: hostSite(t, "default-src 'self' "+chatSite, map[string]string{
				"page.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<script type="module" src="` + chatBase + `/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `" user="frank"></chat-room></body></html>`,
			})}
			if allow {
				cfg.handler = "allow_origins " + rootSite
			}
			startCaddy(t, cfg)
			tab := newTab(t, browser, "host")
			run(t, tab, chromedp.Navigate(rootSite+"/host/page.html"))
			if !allow {
				time.Sleep(time.Second)
				if state := widgetState(t, tab, "w"); state != "" {
					t.Fatalf("without allow_origins the widget shows %q", state)
				}
				if got := stored(t, room); got != "" {
					t.Errorf("without allow_origins the room has %s", got)
				}
				return
			}
			pollUntil(t, 10*time.Second, "the widget is live", func() bool { return widgetState(t, tab, "w") == "live" })
			typeInWidget(t, tab, "w", "across sites")
			got := waitWidget(t, tab, "w", 1)
			if got[0].User != "frank" || got[0].Text != "across sites" || stored(t, room) != got[0].ID {
				t.Errorf("the widget shows %+v; the room stores %s", got, stored(t, room))
			}
		})
	}
}

// testWidgetToken: a page whose <chat-room> gets its tokens from
// token-url, a small endpoint of the site that mints a token for whoever
// the page signed in (here, by the query), valid for 3 s. alice's widget
// reads the private room and posts to it as alice, verified; it renews its
// token across expiries without losing any of the messages posted every
// 200 ms meanwhile; the chat's room page and room list, told the token URL
// by token_url, show the room too, and the room page pages back through
// its history with the token. mallory's widget, whose token grants no such
// room, says so. Tokens already past exp, or about to be, make it back off.
func testWidgetToken(t *testing.T, browser context.Context) {
	room := privateRoom(t)
	s := tokentest.NewSigner(t, "hs256", "")
	var minted atomic.Int32
	mint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		grants, ttl := map[string][]string{"read": {"other-*"}}, 3*time.Second
		switch user {
		case "alice":
			grants = map[string][]string{"read": {room}, "post": {room}}
		case "late":
			// A clock behind the server's: past exp, within its leeway.
			grants, ttl = map[string][]string{"read": {room}}, -10*time.Second
		case "brief":
			// exp is in whole seconds: at most a second away.
			grants, ttl = map[string][]string{"read": {room}}, time.Second
		}
		minted.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"token": signed(t, s, user, ttl, grants)})
	}))
	t.Cleanup(mint.Close)
	page := func(user string) string {
		return `<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<script type="module" src="/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `" token-url="/token?user=` + user + `"></chat-room></body></html>`
	}
	t.Setenv("CHAT_TEST_TOKEN_SECRET", tokentest.Secret)
	cfg := tokenConfig("key hs256 {env.CHAT_TEST_TOKEN_SECRET}\n\t\t\ttoken_url /token?user=alice")
	cfg.site = hostSite(t, "default-src 'self'", map[string]string{
		"alice.html": page("alice"), "mallory.html": page("mallory"), "late.html": page("late"), "brief.html": page("brief"),
	}) +
		"\n\thandle /token {\n\t\treverse_proxy " + strings.TrimPrefix(mint.URL, "http://") + "\n\t}"
	startCaddy(t, cfg)
	defer reload(t, config{})

	tab := newTab(t, browser, "alice")
	opened := streamsOpened(t, tab)
	run(t, tab, chromedp.Navigate(rootSite+"/host/alice.html"))
	pollUntil(t, 10*time.Second, "alice's widget is live", func() bool { return widgetState(t, tab, "w") == "live" })
	typeInWidget(t, tab, "w", "hello, team")
	if got := waitWidget(t, tab, "w", 1); got[0].User != "alice" || got[0].Text != "hello, team" {
		t.Fatalf("alice's widget shows %+v", got)
	}

	// Posted from the server side through two expiries of the widget's
	// token.
	auth := bearer(signed(t, s, "bob", time.Minute, map[string][]string{"post": {room}}))
	var want []string
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		r := postAs(t, rootSite, room, fmt.Sprintf("tick %d", len(want)), auth...)
		want = append(want, r.json["id"].(string))
	}
	got := waitWidget(t, tab, "w", 1+len(want))
	var shown []string
	for _, m := range got[1:] {
		shown = append(shown, m.ID)
	}
	if !slices.Equal(shown, want) {
		t.Fatalf("across token expiries the widget shows\n%v\nwant\n%v", shown, want)
	}
	if n, m := opened(room), minted.Load(); n < 3 || m < 3 {
		t.Errorf("the widget opened %d streams with %d tokens in 8 s with tokens of 3 s, want a renewal at each expiry", n, m)
	}

	// The chat's own pages, with token_url: the room page streams the
	// private room, and the room list shows it once signed in.
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	if onPage := waitMessages(t, tab, 1+len(want)); onPage[0].Text != "hello, team" {
		t.Errorf("the room page shows %+v first", onPage[0])
	}
	// The page could not read the room's history as it rendered: it
	// offers older messages, asks for them with its token, and learns
	// that the room starts with the first one it shows.
	waitShown(t, tab, "#older")
	get(t, tab, chromedp.Evaluate[bool](`(document.getElementById('older').click(), true)`))
	pollUntil(t, 10*time.Second, "the room page pages back with its token", func() bool {
		return strings.Contains(get(t, tab, chromedp.Text(chromedp.CSS("#older-status"))), "start of the room")
	})
	run(t, tab, chromedp.Navigate(rootSite+"/"))
	pollUntil(t, 10*time.Second, "the room list shows the private room", func() bool {
		return strings.Contains(get(t, tab, chromedp.Text(chromedp.CSS("#rooms"))), room)
	})

	other, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	refusedTab := newTab(t, other, "mallory")
	run(t, refusedTab, chromedp.Navigate(rootSite+"/host/mallory.html"))
	notice := `document.getElementById('w').shadowRoot.querySelector('.notice')`
	pollUntil(t, 10*time.Second, "mallory's widget says why it is refused", func() bool {
		return strings.Contains(get(t, refusedTab, chromedp.Evaluate[string](notice+`.textContent`)), "does not grant read access to room "+strconv.Quote(room))
	})
	if state := widgetState(t, refusedTab, "w"); state != "refused" {
		t.Errorf("mallory's widget is %q, want refused", state)
	}
	if rows := get(t, refusedTab, chromedp.Evaluate[[]shownMessage](readWidget("w"))); len(rows) != 0 {
		t.Errorf("mallory's widget shows %v", rows)
	}

	// Tokens that open no stream, or one that expires at once, make the
	// widget back off, never open stream after stream.
	for _, user := range []string{"late", "brief"} {
		tab := newTab(t, other, user)
		opened := streamsOpened(t, tab)
		run(t, tab, chromedp.Navigate(rootSite+"/host/"+user+".html"))
		time.Sleep(4 * time.Second)
		// At 0 s, then after backoffs of 1 s and 2 s.
		if n := opened(room); n > 3 {
			t.Errorf("%s's widget opened %d streams in 4 s, want a backoff", user, n)
		}
	}
}

// testPresence: a widget and a room page, in two browser contexts, both
// show who is here within 2 s; when the room page's tab closes, its user
// is gone from the widget within 2 s.
func testPresence(t *testing.T, browser context.Context) {
	room := roomFor(t, "p")
	startCaddy(t, config{site: hostSite(t, "default-src 'self'", map[string]string{
		"page.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<script type="module" src="/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `" user="carol"></chat-room></body></html>`,
	})})
	host := newTab(t, browser, "host")
	run(t, host, chromedp.Navigate(rootSite+"/host/page.html"))
	here := func(tab context.Context, expr string) func() bool {
		return func() bool { return get(t, tab, chromedp.Evaluate[string](expr)) == "Here: carol, dave" }
	}
	widgetHere := `document.getElementById('w').shadowRoot.querySelector('.here').textContent`

	other, cancelOther := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancelOther)
	roomPage, closeRoomPage := chromedp.NewContext(other)
	t.Cleanup(closeRoomPage)
	if err := chromedp.Do(roomPage); err != nil {
		t.Fatal(err)
	}
	run(t, roomPage, chromedp.Navigate(rootSite+"/room/"+room))
	// The name remembered is the stream's from the next time it opens.
	get(t, roomPage, chromedp.Evaluate[bool](`localStorage.setItem('caddy-chat-user', 'dave'), true`))
	opened := time.Now()
	run(t, roomPage, chromedp.Reload())
	waitState(t, roomPage, "live")
	pollUntil(t, 2*time.Second-time.Since(opened)+time.Second, "the widget shows carol and dave", here(host, widgetHere))
	pollUntil(t, time.Second, "the room page shows carol and dave", here(roomPage, `document.getElementById('here').textContent`))

	closeRoomPage()
	closed := time.Now()
	pollUntil(t, 3*time.Second, "dave leaves the widget", func() bool {
		return get(t, host, chromedp.Evaluate[string](widgetHere)) == "Here: carol"
	})
	if d := time.Since(closed); d > 2*time.Second {
		t.Errorf("dave left the widget %v after his tab closed, want within 2 s", d)
	}
}

// postMany posts n messages to room through the API and returns their ids.
func postMany(t *testing.T, room string, n int) []string {
	t.Helper()
	var posted []string
	for i := range n {
		posted = append(posted, postJSON(t, rootSite, room, "api", fmt.Sprint("old ", i)).ID)
	}
	return posted
}

// wheelEvent is a turn of a mouse wheel, for Input.dispatchMouseEvent,
// which wants both deltas: cdproto's own params leave out a zero one.
type wheelEvent struct {
	Type   string  `json:"type"`
	X      float64 `json:"x"`
	Y      float64 `json:"y"`
	DeltaX float64 `json:"deltaX"`
	DeltaY float64 `json:"deltaY"`
}

var dispatchWheel = cdp.Command[wheelEvent, cdp.Empty]{Method: input.CommandDispatchMouseEvent}

// wheelUp scrolls the element selector picks up by one turn of a mouse
// wheel, as a reader does.
func wheelUp(t *testing.T, tab context.Context, selector string) {
	t.Helper()
	at := get(t, tab, chromedp.Evaluate[[]float64](fmt.Sprintf(`(() => {
		const r = document.querySelector(%q).getBoundingClientRect();
		return [r.x + r.width / 2, r.y + r.height / 2];
	})()`, selector)))
	ev := wheelEvent{Type: string(input.DispatchMouseEventTypeMouseWheel), X: at[0], Y: at[1], DeltaY: -400}
	if _, err := chromedp.Call(tab, dispatchWheel, ev); err != nil {
		t.Fatalf("turning the wheel over %s: %v", selector, err)
	}
}

// testOlderOnScroll: a room page shows the newest 50 of 130 messages and
// offers the older ones by a labelled button. A reader who scrolls up with
// the wheel gets them, a page at a time, until the first message shows,
// while a message that comes live meanwhile goes to the bottom: every
// message once, in order, under one day separator. The page then says it
// is the start of the room and offers no more.
func testOlderOnScroll(t *testing.T, browser context.Context) {
	startCaddy(t, config{global: "history 1000"})
	room := roomFor(t, "a")
	posted := postMany(t, room, 130)
	tab := newTab(t, browser, "page")
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	if got := waitMessages(t, tab, 50); len(got) != 50 || got[0].ID != posted[80] {
		t.Fatalf("the page opens with %d messages from %s, want the newest 50", len(got), got[0].ID)
	}
	waitShown(t, tab, "#older")
	if spoken(t, tab, "#older", "Load older messages") == 0 {
		t.Error("the button is not announced as \"Load older messages\"")
	}

	var live string
	pollUntil(t, 20*time.Second, "scrolling up shows the first message", func() bool {
		wheelUp(t, tab, "main")
		time.Sleep(100 * time.Millisecond)
		shown := get(t, tab, chromedp.Evaluate[[]shownMessage](readMessages))
		if live == "" && len(shown) >= 100 {
			live = postJSON(t, rootSite, room, "api", "live while paging").ID
		}
		return shown[0].ID == posted[0]
	})
	want := append(slices.Clone(posted), live)
	got := waitMessages(t, tab, len(want))
	time.Sleep(200 * time.Millisecond) // a duplicate would show up by now
	if got = waitMessages(t, tab, len(want)); shownIDs(got) != strings.Join(want, ",") {
		t.Errorf("after scrolling up the page shows\n%s\nwant\n%s", shownIDs(got), strings.Join(want, ","))
	}
	var days []listEntry
	for _, e := range get(t, tab, chromedp.Evaluate[[]listEntry](readList)) {
		if e.Day != "" {
			days = append(days, e)
		}
	}
	if first := get(t, tab, chromedp.Evaluate[bool](`document.querySelector('#messages > li').classList.contains('day')`)); len(days) != 1 || !first {
		t.Errorf("the list has the day separators %v, first %v; want one, at the top", days, first)
	}
	if hidden := get(t, tab, chromedp.Evaluate[bool](`document.getElementById('older').hidden`)); !hidden {
		t.Error("the button is still offered at the start of the room")
	}
	if status := get(t, tab, chromedp.Text(chromedp.CSS("#older-status"))); !strings.Contains(status, "start of the room") {
		t.Errorf("at the start of the room the status says %q", status)
	}
}

// testOlderByKeyboard: a <chat-room history="5"> in a room of 60 messages.
// A keyboard user tabs to "Load older messages", which scrolls the list to
// its top without loading, and presses Enter: 50 older messages come in
// above, and the message that was at the top stays where it was; Enter
// again brings the first 5, and then the button goes, and focus moves to
// the status, which says it is the start of the room.
func testOlderByKeyboard(t *testing.T, browser context.Context) {
	room := roomFor(t, "k")
	startCaddy(t, config{global: "history 1000", site: hostSite(t, "default-src 'self'", map[string]string{
		"page.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<script type="module" src="/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `" history="5"></chat-room></body></html>`,
	})})
	posted := postMany(t, room, 60)
	tab := newTab(t, browser, "host")
	run(t, tab, chromedp.Navigate(rootSite+"/host/page.html"))
	pollUntil(t, 10*time.Second, "the widget is live", func() bool { return widgetState(t, tab, "w") == "live" })
	if got := waitWidget(t, tab, "w", 5); shownIDs(got) != strings.Join(posted[55:], ",") {
		t.Fatalf("the widget opens with %s, want the newest 5", shownIDs(got))
	}
	const root = `document.getElementById('w').shadowRoot`
	focused := func() string {
		return get(t, tab, chromedp.Evaluate[string](root+`.activeElement?.textContent || ""`))
	}
	pollUntil(t, 5*time.Second, "Tab reaches the button", func() bool {
		run(t, tab, chromedp.KeyEvent(kb.Tab))
		return focused() == "Load older messages"
	})
	topOf := func(id string) float64 {
		return get(t, tab, chromedp.Evaluate[float64](fmt.Sprintf(`%s.querySelector('li[data-id=%q]').getBoundingClientRect().top`, root, id)))
	}
	time.Sleep(200 * time.Millisecond) // a load on the way to the button would show by now
	scrolled := get(t, tab, chromedp.Evaluate[float64](root+`.querySelector('.scroller').scrollTop`))
	if got := get(t, tab, chromedp.Evaluate[[]shownMessage](readWidget("w"))); len(got) != 5 || scrolled != 0 {
		t.Fatalf("tabbing to the button scrolled the list to %v px and loaded %d messages, want it at the top, waiting for Enter", scrolled, len(got)-5)
	}
	top := topOf(posted[55])
	run(t, tab, pressEnter(false))
	if got := waitWidget(t, tab, "w", 55); shownIDs(got) != strings.Join(posted[5:], ",") {
		t.Fatalf("after Enter the widget shows %s, want the newest 55", shownIDs(got))
	}
	if moved := topOf(posted[55]); math.Abs(moved-top) >= 1 {
		t.Errorf("the message at the top moved from %v to %v px as older ones came in above it", top, moved)
	}
	if f := focused(); f != "Load older messages" {
		t.Fatalf("after loading, focus is on %q, want still the button", f)
	}
	run(t, tab, pressEnter(false))
	if got := waitWidget(t, tab, "w", 60); shownIDs(got) != strings.Join(posted, ",") {
		t.Fatalf("after Enter again the widget shows %s, want all 60", shownIDs(got))
	}
	pollUntil(t, 5*time.Second, "the button goes at the start of the room", func() bool {
		return get(t, tab, chromedp.Evaluate[bool](root+`.querySelector('.older button').hidden`))
	})
	if f := focused(); !strings.Contains(f, "start of the room") {
		t.Errorf("at the start of the room focus is on %q, want the status that says so", f)
	}
}
