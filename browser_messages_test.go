package chat

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// signInTab makes every request of tab carry user's basic_auth
// credentials, as a browser does once its user has signed in.
func signInTab(t *testing.T, tab context.Context, user string) {
	t.Helper()
	if _, err := chromedp.Call(tab, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	auth := signedIn(user)
	if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{auth[0]: auth[1]}}); err != nil {
		t.Fatal(err)
	}
}

// actionsOn is what the buttons on the message id of a page say, in the
// list root (a query for document or a widget's shadow root), each
// prefixed with its group's label on the first.
func actionsOn(t *testing.T, tab context.Context, root, id string) []string {
	t.Helper()
	return get(t, tab, chromedp.Evaluate[[]string](fmt.Sprintf(`(() => {
	const li = %s.querySelector('li[data-id="%s"]');
	const group = li && li.querySelector('.actions');
	if (!group) return [];
	return [group.getAttribute('aria-label'), ...[...group.querySelectorAll('button')].map((b) => b.textContent)];
})()`, root, id)))
}

// focusOn focuses the element the expression js finds, as tabbing to it
// does.
func focusOn(t *testing.T, tab context.Context, js string) {
	t.Helper()
	if !get(t, tab, chromedp.Evaluate[bool](`(() => { const el = `+js+`; if (!el) return false; el.focus(); return true; })()`)) {
		t.Fatalf("nothing to focus: %s", js)
	}
}

// focused describes the element with focus: its text (a text box's
// value), and its label or its type.
func focused(t *testing.T, tab context.Context) string {
	t.Helper()
	return get(t, tab, chromedp.Evaluate[string](`(() => {
	let el = document.activeElement;
	while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
	const text = el.tagName === "TEXTAREA" ? el.value : el.textContent.trim();
	return text + "|" + (el.getAttribute("aria-label") || el.type || "");
})()`))
}

// testModeratorDeletes: on a moderate mount every message offers Delete
// and Ban author, in a group named for the message, on the room page and
// in a widget; a reader's page and widget offer neither. The moderator
// deletes a message by keyboard alone, and it vanishes from the
// moderator's page and from the reader's page and widget, in another
// browser, while the other message stays.
func testModeratorDeletes(t *testing.T, browser context.Context) {
	room := roomFor(t, "a")
	startCaddy(t, config{site: moderatedSite(t, false, "") + "\n\t" + hostSite(t, "default-src 'self'", map[string]string{
		"reader.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title><script type="module" src="/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `"></chat-room></body></html>`,
		"mod.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title><script type="module" src="/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `" src="/mod/"></chat-room></body></html>`,
	})})
	spam := postJSON(t, rootSite, room, "sam", "buy cheap watches")
	fair := postJSON(t, rootSite, room, "ann", "a fair question")

	mod, modWidget := newTab(t, browser, "moderator"), newTab(t, browser, "moderator's widget")
	signInTab(t, mod, "admin")
	signInTab(t, modWidget, "admin")
	other, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	reader, readerWidget := newTab(t, other, "reader"), newTab(t, other, "reader's widget")
	run(t, mod, chromedp.Navigate(rootSite+"/mod/room/"+room))
	run(t, modWidget, chromedp.Navigate(rootSite+"/host/mod.html"))
	run(t, reader, chromedp.Navigate(rootSite+"/room/"+room))
	run(t, readerWidget, chromedp.Navigate(rootSite+"/host/reader.html"))
	waitState(t, mod, "live")
	waitState(t, reader, "live")
	waitWidget(t, readerWidget, "w", 2)
	waitWidget(t, modWidget, "w", 2)

	const widgetRoot = `document.getElementById('w').shadowRoot`
	if got := actionsOn(t, mod, "document", spam.ID); len(got) != 3 || !strings.HasPrefix(got[0], "Message by sam, ") || !slices.Equal(got[1:], []string{"Delete", "Ban author"}) {
		t.Errorf("the moderator's page offers %q on sam's message, want Delete and Ban author in a group named for it", got)
	}
	pollUntil(t, wait, "the moderator's widget offers Delete and Ban author", func() bool {
		got := actionsOn(t, modWidget, widgetRoot, spam.ID)
		return len(got) == 3 && slices.Equal(got[1:], []string{"Delete", "Ban author"})
	})
	for _, id := range []string{spam.ID, fair.ID} {
		if got := actionsOn(t, reader, "document", id); len(got) != 0 {
			t.Errorf("the reader's page offers %q on %s", got, id)
		}
		if got := actionsOn(t, readerWidget, widgetRoot, id); len(got) != 0 {
			t.Errorf("the reader's widget offers %q on %s", got, id)
		}
	}

	focusOn(t, mod, `document.querySelector('li[data-id="`+spam.ID+`"] .actions button')`)
	run(t, mod, pressEnter(false))
	if got := focused(t, mod); got != "Delete|submit" {
		t.Fatalf("after Delete, focus is on %q, want the form's Delete", got)
	}
	run(t, mod, pressEnter(false))

	want := []shownMessage{{fair.ID, "ann", "a fair question"}}
	pollUntil(t, wait, "the deleted message vanishes from every page and widget", func() bool {
		return slices.Equal(get(t, reader, chromedp.Evaluate[[]shownMessage](readMessages)), want) &&
			slices.Equal(get(t, mod, chromedp.Evaluate[[]shownMessage](readMessages)), want) &&
			slices.Equal(get(t, readerWidget, chromedp.Evaluate[[]shownMessage](readWidget("w"))), want) &&
			slices.Equal(get(t, modWidget, chromedp.Evaluate[[]shownMessage](readWidget("w"))), want)
	})
	if got := focused(t, mod); got != "Delete|button" {
		t.Errorf("after the delete, focus is on %q, want the next message's Delete", got)
	}
	if said := get(t, mod, chromedp.Text(chromedp.CSS("#action-status"))); said != "Message deleted." {
		t.Errorf("the moderator's page says %q, want that the message was deleted", said)
	}
	if got := stored(t, room); got != fair.ID {
		t.Errorf("the server keeps %s, want only %s", got, fair.ID)
	}
}

// testAuthorEdits: an author's own message offers Edit and Delete; they
// edit it by keyboard, and the room page and a widget in another browser
// show the new text marked edited, as does the author's own page after a
// reload, where the buttons are still offered. Others' messages offer
// nothing to the author, and the author's nothing to others. Delete then
// removes it everywhere.
func testAuthorEdits(t *testing.T, browser context.Context) {
	room := roomFor(t, "a")
	startCaddy(t, config{site: hostSite(t, "default-src 'self'", map[string]string{
		"page.html": `<!doctype html><html><head><meta charset="utf-8"><title>host</title><script type="module" src="/widget.js"></script></head>
<body><chat-room id="w" room="` + room + `"></chat-room></body></html>`,
	})})
	bob := postJSON(t, rootSite, room, "bob", "bob was here")
	author := newTab(t, browser, "author")
	other, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	reader, widget := newTab(t, other, "reader"), newTab(t, other, "widget")
	run(t, author, chromedp.Navigate(rootSite+"/room/"+room))
	run(t, reader, chromedp.Navigate(rootSite+"/room/"+room))
	run(t, widget, chromedp.Navigate(rootSite+"/host/page.html"))
	waitState(t, author, "live")
	waitState(t, reader, "live")
	waitWidget(t, widget, "w", 1)

	run(t, author,
		chromedp.SendKeys(chromedp.CSS("#user"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#message"), "helo wrold"), pressEnter(false))
	mine := waitMessages(t, reader, 2)[1].ID
	pollUntil(t, wait, "the author's page offers Edit and Delete on her message", func() bool {
		got := actionsOn(t, author, "document", mine)
		return len(got) == 3 && slices.Equal(got[1:], []string{"Edit", "Delete"})
	})
	if got := actionsOn(t, author, "document", bob.ID); len(got) != 0 {
		t.Errorf("the author's page offers %q on bob's message", got)
	}
	if got := actionsOn(t, reader, "document", mine); len(got) != 0 {
		t.Errorf("a reader in another browser is offered %q on alice's message", got)
	}

	focusOn(t, author, `document.querySelector('li[data-id="`+mine+`"] .actions button')`)
	run(t, author, pressEnter(false))
	if got := focused(t, author); got != "helo wrold|New text of the message" {
		t.Fatalf("after Edit, focus is on %q, want the text to edit", got)
	}
	// Select the old text and type over it, as a keyboard does.
	get(t, author, chromedp.Evaluate[bool](`(document.activeElement.select(), true)`))
	if _, err := chromedp.Call(author, input.InsertText, input.InsertTextParams{Text: "hello world"}); err != nil {
		t.Fatal(err)
	}
	run(t, author, pressEnter(false))

	edited := `(li) => li.querySelector('.text').textContent + (li.querySelector('.edited') ? ' (edited)' : '')`
	shown := func(tab context.Context, root string) string {
		return get(t, tab, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const li = %s.querySelector('li[data-id="%s"]'); return li ? (%s)(li) : ''; })()`, root, mine, edited)))
	}
	const widgetRoot = `document.getElementById('w').shadowRoot`
	pollUntil(t, wait, "the edit shows on every page and widget, marked edited", func() bool {
		return shown(reader, "document") == "hello world (edited)" && shown(widget, widgetRoot) == "hello world (edited)" &&
			shown(author, "document") == "hello world (edited)"
	})
	if got := focused(t, author); got != "Edit|button" {
		t.Errorf("after saving, focus is on %q, want Edit again", got)
	}

	run(t, author, chromedp.Reload())
	waitState(t, author, "live")
	if got, buttons := shown(author, "document"), actionsOn(t, author, "document", mine); got != "hello world (edited)" || len(buttons) != 3 {
		t.Errorf("after a reload the author's page shows %q with %q, want the edit and her buttons", got, buttons)
	}
	run(t, author, chromedp.Click(chromedp.CSS(`li[data-id="`+mine+`"] .actions button:nth-child(2)`)))
	run(t, author, chromedp.Click(chromedp.CSS(`li[data-id="`+mine+`"] form button[type=submit]`)))
	want := []shownMessage{{bob.ID, "bob", "bob was here"}}
	pollUntil(t, wait, "the deleted message vanishes from every page and widget", func() bool {
		return slices.Equal(get(t, reader, chromedp.Evaluate[[]shownMessage](readMessages)), want) &&
			slices.Equal(get(t, widget, chromedp.Evaluate[[]shownMessage](readWidget("w"))), want) &&
			slices.Equal(get(t, author, chromedp.Evaluate[[]shownMessage](readMessages)), want)
	})
}

// testModeratorBans: a moderator bans a message's author from the page,
// by keyboard, for the duration chosen, purging their messages: the
// author's messages vanish from a reader's page, the page says who was
// banned for how long, and the author's next post is refused as banned.
// The ban holds the author by their address, which is the test's: it is
// lifted at the end.
func testModeratorBans(t *testing.T, browser context.Context) {
	room := roomFor(t, "a")
	startCaddy(t, config{site: moderatedSite(t, false, "")})
	spam := postJSON(t, rootSite, room, "sam", "buy cheap watches")
	postJSON(t, rootSite, room, "sam", "and more watches")
	mod := newTab(t, browser, "moderator")
	signInTab(t, mod, "admin")
	other, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	reader := newTab(t, other, "reader")
	run(t, mod, chromedp.Navigate(rootSite+"/mod/room/"+room))
	run(t, reader, chromedp.Navigate(rootSite+"/room/"+room))
	waitState(t, mod, "live")
	waitMessages(t, reader, 2)

	focusOn(t, mod, `document.querySelector('li[data-id="`+spam.ID+`"] .actions button:nth-child(2)')`)
	run(t, mod, pressEnter(false))
	if got := focused(t, mod); !strings.HasPrefix(got, "1 hour24 hours7 daysforever|") {
		t.Fatalf("after Ban author, focus is on %q, want the choice of duration", got)
	}
	// The keyboard picks 7 days, tabs to the purge box and ticks it, and
	// tabs on to Ban.
	for _, key := range []string{kb.ArrowDown, "\t", " ", "\t"} {
		run(t, mod, chromedp.KeyEvent(key))
	}
	if got := focused(t, mod); got != "Ban|submit" {
		t.Fatalf("focus is on %q, want Ban", got)
	}
	run(t, mod, pressEnter(false))

	pollUntil(t, wait, "the banned author's messages vanish, purged", func() bool {
		return len(get(t, reader, chromedp.Evaluate[[]shownMessage](readMessages))) == 0
	})
	pollUntil(t, wait, "the page says who is banned", func() bool {
		return get(t, mod, chromedp.Text(chromedp.CSS("#action-status"))) == "sam is banned for 7 days."
	})
	r := do(t, "POST", rootSite+"/submit", `{"room":"`+room+`","user":"sam","message":"again"}`, "Content-Type", ctJSON)
	if r.status != http.StatusForbidden || r.json["reason"] != "banned" {
		t.Errorf("the author's post after the ban: %d %s, want 403 banned", r.status, r.body)
	}
	bans := do(t, "GET", rootSite+"/mod/rooms/"+room+"/bans", "", signedIn("admin")...)
	list, _ := bans.json["bans"].([]any)
	if len(list) != 1 {
		t.Fatalf("bans of the room: %s, want the one put", bans.body)
	}
	ban := list[0].(map[string]any)
	created, _ := time.Parse(time.RFC3339, ban["created"].(string))
	expires, _ := time.Parse(time.RFC3339, ban["expires"].(string))
	if d := expires.Sub(created); d != 7*24*time.Hour {
		t.Errorf("the ban lasts %v, want the 7 days chosen", d)
	}
	if r := do(t, "DELETE", rootSite+"/mod/rooms/"+room+"/bans/"+ban["id"].(string), "", signedIn("admin")...); r.status != http.StatusNoContent {
		t.Errorf("lifting the ban: %d %s", r.status, r.body)
	}
}
