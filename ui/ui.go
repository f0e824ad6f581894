// Package ui holds the chat's HTML pages and their static assets, embedded so
// that the plugin needs no files beside the binary and no CDN.
//
// Every URL in the pages is relative, so they work wherever the handler is
// mounted. Scripts and styles are separate files, never inline, so that the
// pages run under a strict Content-Security-Policy.
package ui

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Widget is widget.js, the script that defines the <chat-room> element. It
// imports static/core.js, as the pages' chat.js does.
//
//go:embed widget.js
var Widget []byte

// Static is the assets the pages load, served under static/.
var Static, _ = fs.Sub(staticFS, "static")

// ContentSecurityPolicy allows the pages nothing but their own scripts,
// styles and connections.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// The pages render times in UTC and say so; chat.js rewrites them in the
// reader's zone and locale, which only the browser knows.
var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"clock": func(t time.Time) string { return t.UTC().Format("15:04") },
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	// As the API writes times, so that a rendered message's datetime reads
	// as the same message streamed live.
	"iso":    func(t time.Time) string { return t.UTC().Format(rooms.TimeLayout) },
	"date":   func(t time.Time) string { return t.UTC().Format(time.DateOnly) },
	"day":    func(t time.Time) string { return t.UTC().Format("Monday, 2 January 2006") },
	"newDay": newDay,
}).ParseFS(templateFS, "templates/*.html"))

// newDay reports whether msgs[i] is the first message of its UTC day in
// msgs, which then gets a day separator before it.
func newDay(msgs []Message, i int) bool {
	return i == 0 || msgs[i-1].Time.UTC().Format(time.DateOnly) != msgs[i].Time.UTC().Format(time.DateOnly)
}

// RoomSummary is one row of the room list.
type RoomSummary struct {
	Name        string
	Subscribers int
}

// Index is what the room list page shows.
type Index struct {
	Rooms []RoomSummary
	// Fixed is set when only an allowlist of rooms exists, so the page
	// offers no form to open others.
	Fixed bool
	// TokenURL is where the page fetches its token, so that its list
	// shows the private rooms the token grants; "" for none.
	TokenURL string
}

// Message is one message as the room page shows it.
type Message struct {
	ID   string
	User string
	Text string
	Time time.Time
	// Verified is set when User came from the site's auth: the page marks
	// it, and never marks a name for its own sake.
	Verified bool
	// Edited is when Text was last edited, zero when never: the page
	// says "edited".
	Edited time.Time
}

// Settings is what the page's and the widget's script are told of the
// handler and the reader: the page has them in its body's data
// attributes, the widget from the handler's config route, as JSON.
type Settings struct {
	// Moderate is set on a moderate mount: every message offers its
	// delete and a ban of its author.
	Moderate bool `json:"moderate"`
	// EditWindow is how long, in seconds, authors may edit and delete
	// their own messages; 0 when they may not.
	EditWindow int64 `json:"edit_window"`
	// Identity is the reader's name when the server knows it, which
	// marks their verified messages as their own.
	Identity string `json:"identity,omitempty"`
}

// Room is what a room page shows.
type Room struct {
	Name        string
	Messages    []Message // recent history, oldest first
	LastID      string    // where the page's stream resumes
	TokenURL    string    // where the page fetches its token, "" for none
	AllowDelete bool
	Settings
	// Older is set when the room keeps messages older than Messages: the
	// page offers to load them.
	Older bool
}

// RenderIndex writes the room list page.
func RenderIndex(w io.Writer, data Index) error { return render(w, "index.html", data) }

// RenderRoom writes a room's chat page.
func RenderRoom(w io.Writer, data Room) error { return render(w, "room.html", data) }

func render(w io.Writer, name string, data any) error {
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	return nil
}
