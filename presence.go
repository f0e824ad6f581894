package chat

import (
	"net/http"
)

// servePresence answers GET /rooms/{room}/presence: the room's named users
// with their streams, and how many streams named nobody.
func (h *Handler) servePresence(w http.ResponseWriter, room string) error {
	p, err := h.svc.Presence(room)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}
