package chat

import (
	"net/http"
	"net/url"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// streamPresence sets who a stream is in its room's presence, and whether
// it receives presence events (?presence=1). The identity wins when it
// resolves; else the stream names its user with ?user=, checked as a post's
// author is (a name reserved for a verified author counts as anonymous), or
// stays anonymous. A client keeps at most max_streams_per_client names
// present through this handler, as it holds at most that many streams.
func (h *Handler) streamPresence(r *http.Request, q url.Values, pos *rooms.Position) error {
	switch q.Get("presence") {
	case "", "0":
	case "1":
		pos.WatchPresence = true
	default:
		return badRequest("presence must be 1 or 0")
	}
	pos.ReserveNames = *h.ReserveNames
	if id, ok := h.identity(r); ok {
		pos.User, pos.UserVerified = id, true
		return nil
	}
	pos.User = q.Get("user")
	if pos.User != "" && !validUser(pos.User) {
		return badRequest("user must be 1-64 printable characters")
	}
	return nil
}

// servePresence answers GET /rooms/{room}/presence: the room's named users
// with their streams, and how many streams named nobody.
func (h *Handler) servePresence(w http.ResponseWriter, room string) error {
	if err := h.checkRoom(room); err != nil {
		return err
	}
	p, err := h.app.manager.Presence(room)
	if err != nil {
		return roomsError(err)
	}
	return writeJSON(w, http.StatusOK, p)
}
