package chat

import (
	"net/http"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// servePresence answers GET /rooms/{room}/presence: the room's named users
// with their streams, and how many streams named nobody.
func (h *Handler) servePresence(w http.ResponseWriter, room string) error {
	p, err := h.presence(room)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

// presence is who is in a room, for every adapter.
func (h *Handler) presence(room string) (rooms.Presence, error) {
	if err := h.checkRoom(room); err != nil {
		return rooms.Presence{}, err
	}
	p, err := h.app.manager.Presence(room)
	if err != nil {
		return rooms.Presence{}, roomsError(err)
	}
	return p, nil
}
