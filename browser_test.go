package chat

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// newBrowser starts a headless Chromium for the test. CI installs Debian's
// chromium; a developer without it gets a skip, CI a failure.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path, _ = exec.LookPath("chromium")
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; .ci/run installs it")
		}
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
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

// newTab opens a tab; if the test fails, the tab's screenshot is saved in
// testdata/screenshots.
func newTab(t *testing.T, browser context.Context, name string) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(func() {
		if t.Failed() {
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

const readMessages = `[...document.querySelectorAll('#messages li')].map(li => ({
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

// waitState waits for the connection state the page shows.
func waitState(t *testing.T, tab context.Context, want string) {
	t.Helper()
	run(t, tab, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#status[data-state=%q]`, want))))
}

func shownIDs(msgs []shownMessage) string {
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	return strings.Join(ids, ",")
}

// TestBrowserTwoPages: two pages in one room see each other's messages, in
// the same order; Enter sends, Shift+Enter adds a line; the name is
// remembered. At the site root and under /chat/.
func TestBrowserTwoPages(t *testing.T) {
	startCaddy(t, config{})
	browser := newBrowser(t)
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
			run(t, b,
				chromedp.SendKeys(chromedp.CSS("#user"), "bob"),
				chromedp.SendKeys(chromedp.CSS("#message"), "line one"), pressEnter(true),
				chromedp.SendKeys(chromedp.CSS("#message"), "line two"), pressEnter(false))
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
			// Both tabs share the browser's storage: the last name typed wins.
			cleared := get(t, b, chromedp.Value(chromedp.CSS("#message")))
			run(t, b, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#messages li")))
			remembered := get(t, b, chromedp.Value(chromedp.CSS("#user")))
			if remembered != "bob" || cleared != "" {
				t.Errorf("after sending: name remembered %q, message box %q; want bob and empty", remembered, cleared)
			}
		})
	}
}

// TestBrowserReconnect: when the server ends the stream (here by a reload),
// the page shows it is reconnecting, resumes, and shows every message once.
func TestBrowserReconnect(t *testing.T) {
	startCaddy(t, config{global: "heartbeat 15s"})
	browser := newBrowser(t)
	room := roomFor(t, "a")
	var want []string
	for i := range 3 {
		want = append(want, postJSON(t, rootSite, room, "api", fmt.Sprint("before ", i)).ID)
	}
	tab := newTab(t, browser, "page")
	run(t, tab, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, tab, "live")
	want = append(want, postJSON(t, rootSite, room, "api", "live").ID)
	waitMessages(t, tab, 4)

	reload(t, config{global: "heartbeat 20s"})
	for i := range 3 {
		want = append(want, postJSON(t, rootSite, room, "api", fmt.Sprint("during reconnect ", i)).ID)
	}
	waitState(t, tab, "live")
	want = append(want, postJSON(t, rootSite, room, "api", "after").ID)
	waitMessages(t, tab, len(want))
	time.Sleep(200 * time.Millisecond) // a duplicate would show up by now
	got := waitMessages(t, tab, len(want))
	if shownIDs(got) != strings.Join(want, ",") {
		t.Errorf("the page shows %s\nwant %s", shownIDs(got), strings.Join(want, ","))
	}
}

// TestBrowserHostileText: markup in messages and names is shown as text,
// whether rendered by the server or added live, and no script runs.
func TestBrowserHostileText(t *testing.T) {
	startCaddy(t, config{})
	browser := newBrowser(t)
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

// TestBrowserWithoutScript: with JavaScript off, the room list's form opens
// a room and the room's form posts, landing back on the room page.
func TestBrowserWithoutScript(t *testing.T) {
	startCaddy(t, config{})
	browser := newBrowser(t)
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
		chromedp.WaitVisible(chromedp.CSS("#messages li")),
	)
	location := get(t, tab, chromedp.Location())
	if location != chatBase+"/room/"+room {
		t.Errorf("after posting the page is %s, want the room page", location)
	}
	got := waitMessages(t, tab, 1)
	if got[0].User != "nojs" || got[0].Text != "posted without script" {
		t.Errorf("shown %+v", got[0])
	}
}

// TestBrowserRoomDeleted: the page tells its reader when the room is
// deleted, and offers the delete button only where deleting is allowed.
func TestBrowserRoomDeleted(t *testing.T) {
	startCaddy(t, config{handler: "allow_delete"})
	browser := newBrowser(t)
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

var screenshots = flag.Bool("screenshots", false, "write the README's screenshots to docs/")

// TestScreenshots renders the README's screenshots of a room, on a desktop
// and on a phone. It runs only with -screenshots.
func TestScreenshots(t *testing.T) {
	if !*screenshots {
		t.Skip("run with -screenshots to write docs/*.png")
	}
	startCaddy(t, config{})
	room := "lobby"
	for _, m := range [][2]string{
		{"alice", "Morning! Is the release still on for today?"},
		{"bob", "Yes. Tagging it after lunch."},
		{"carol", "Changelog is ready:\n- resumable streams\n- room history API"},
		{"alice", "<b>Great</b>, thanks both"},
	} {
		postJSON(t, chatBase, room, m[0], m[1])
	}
	browser := newBrowser(t)
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
}

// TestBrowserRoomList: the room list shows each room with its live
// subscriber count, and opens a room from its form.
func TestBrowserRoomList(t *testing.T) {
	startCaddy(t, config{})
	browser := newBrowser(t)
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
