package chat

import (
	"net/http"
	"net/url"
)

// streamPresence is who a stream is in its room's presence, and whether it
// receives presence events (?presence=1). The identity wins when it
// resolves; else the stream names its user with ?user=, checked as a post's
// author is, or stays anonymous. A client keeps at most
// max_streams_per_client names present through this handler, as it holds
// at most that many streams.
func (h *Handler) streamPresence(r *http.Request, q url.Values) (user string, watch bool, err error) {
	switch q.Get("presence") {
	case "", "0":
	case "1":
		watch = true
	default:
		return "", false, badRequest("presence must be 1 or 0")
	}
	if id, ok := h.identity(r); ok {
		return id, watch, nil
	}
	user = q.Get("user")
	if user != "" && !validUser(user) {
		return "", false, badRequest("user must be 1-64 printable characters")
	}
	return user, watch, nil
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
