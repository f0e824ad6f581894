package chat

import (
	"net/http"

	"github.com/caddy-chat/caddy-chat/service"
)

// servePresence answers GET /rooms/{room}/presence: the room's named users
// with their streams, and how many streams named nobody.
func (h *Handler) servePresence(w http.ResponseWriter, c service.Caller, room string) error {
	p, err := h.svc.Presence(c, room)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}
