package chat

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"time"

	"github.com/caddy-chat/caddy-chat/service"
	"github.com/caddy-chat/caddy-chat/ui"
)

// pageHistory is how many recent messages a room page shows on load.
const pageHistory = 50

// serveIndex renders the rooms c may read. A caller whose token was
// refused sees the public rooms, as any visitor does: the page is where
// they sign in again.
func (h *Handler) serveIndex(w http.ResponseWriter, c service.Caller) error {
	list, err := h.svc.Rooms(c)
	if err != nil {
		list, _ = h.svc.Rooms(service.Caller{})
	}
	data := ui.Index{Fixed: len(h.Rooms) > 0, Rooms: make([]ui.RoomSummary, len(list)), TokenURL: h.tokenURL()}
	for i, info := range list {
		data.Rooms[i] = ui.RoomSummary{Name: info.Name, Subscribers: info.Subscribers}
	}
	return writePage(w, func(b *bytes.Buffer) error { return ui.RenderIndex(b, data) })
}

// serveOpenRoom sends the index page's "open a room" form, which cannot
// build a path without script, on to the room's page.
func (h *Handler) serveOpenRoom(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("name")
	if err := h.svc.CheckRoom(name); err != nil {
		return err
	}
	w.Header().Set("Location", "room/"+url.PathEscape(name))
	w.WriteHeader(http.StatusSeeOther)
	return nil
}

// serveRoomPage renders a room's chat page with its recent history. It
// creates nothing: the page's stream opens the room. A room that c may not
// read is rendered without its history, which the page's stream replays
// once its script has a token (see TokenURL).
func (h *Handler) serveRoomPage(w http.ResponseWriter, r *http.Request, c service.Caller, room string) error {
	if err := h.svc.CheckRoom(room); err != nil {
		return err
	}
	// Past the room's check, a refusal to read is the token's.
	rep, err := h.svc.History(c, room, "", "", pageHistory)
	unread := service.IsKind(err, service.Unauthenticated) || service.IsKind(err, service.Forbidden)
	if err != nil && !service.IsKind(err, service.NotFound) && !unread {
		return err
	}
	data := ui.Room{Name: room, AllowDelete: h.AllowDelete, TokenURL: h.tokenURL(), Settings: h.uiSettings(r)}
	// A room the page reads by its token may keep more than its stream
	// replays: the page asks, signed in, as it does for the rest.
	data.Older = len(rep.Messages) > 0 && !rep.Start || unread && data.TokenURL != ""
	for _, m := range rep.Messages {
		data.Messages = append(data.Messages, ui.Message{ID: m.ID, User: m.User, Text: m.Message, Time: m.Time, Verified: m.Verified, Edited: m.Edited})
	}
	if n := len(rep.Messages); n > 0 {
		data.LastID = rep.Messages[n-1].ID
	}
	return writePage(w, func(b *bytes.Buffer) error { return ui.RenderRoom(b, data) })
}

// uiSettings is what the page and the widget need to know to offer the
// actions on messages that r's sender may take.
func (h *Handler) uiSettings(r *http.Request) ui.Settings {
	s := ui.Settings{Moderate: h.Moderate, EditWindow: int64(time.Duration(*h.EditWindow) / time.Second)}
	s.Identity, _ = h.identity(r)
	return s
}

// serveConfig answers the widget's question of what its reader may do
// here. The answer names the reader: no cache may share it.
func (h *Handler) serveConfig(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, h.uiSettings(r))
}

// tokenURL is where the pages fetch their token, "" for none.
func (h *Handler) tokenURL() string {
	if h.Token == nil {
		return ""
	}
	return h.Token.TokenURL
}

// serveStatic serves the pages' embedded scripts and styles.
func serveStatic(w http.ResponseWriter, r *http.Request, name string) error {
	if name != path.Base(name) {
		return service.Refuse(service.NotFound, "no such file")
	}
	// The type is set here, not looked up in the host's mime.types: under
	// nosniff a style sheet served as anything but text/css is ignored.
	setStaticHeaders(w, staticTypes[path.Ext(name)])
	http.ServeFileFS(w, r, ui.Static, name)
	return nil
}

// serveWidget serves widget.js, which defines <chat-room>. It is served at
// the mount point, not under static/, so that the directory it is loaded
// from is the chat's: the element finds the chat there by default.
func serveWidget(w http.ResponseWriter, r *http.Request) error {
	setStaticHeaders(w, staticTypes[".js"])
	http.ServeContent(w, r, "widget.js", time.Time{}, bytes.NewReader(ui.Widget))
	return nil
}

func setStaticHeaders(w http.ResponseWriter, ctype string) {
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

var staticTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
}

// writePage renders a page into a buffer first, so that a template error
// becomes a clean 500 instead of half a page.
func writePage(w http.ResponseWriter, render func(*bytes.Buffer) error) error {
	var b bytes.Buffer
	if err := render(&b); err != nil {
		return fmt.Errorf("rendering page: %w", err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Content-Security-Policy", ui.ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Cache-Control", "no-cache")
	_, err := w.Write(b.Bytes())
	return err
}
