package chat

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
)

// The routes of one message, /rooms/{room}/messages/{id}: PATCH edits it,
// DELETE erases it. Both answer with the action as stored, the same JSON
// that streams send as an edit or delete event.

// secretHeader carries the secret that proves an anonymous author wrote
// the message, as the submit answer handed it out. A header rather than a
// field of the body, so that DELETE, which has none, takes it the same way.
const secretHeader = "Chat-Secret"

// editBody is the body of PATCH /rooms/{room}/messages/{id}.
type editBody struct {
	Message string `json:"message"`
}

func (h *Handler) serveEditMessage(w http.ResponseWriter, r *http.Request, c service.Caller, room, id string) error {
	// Refused before the body is read: nothing of it matters to a caller
	// who may post nothing.
	if err := h.svc.MayPost(c); err != nil {
		return err
	}
	_, raw, err := readBody(r.Header, r.Body, h.MaxBodySize, false)
	if err != nil {
		return err
	}
	var in editBody
	if err := decodeJSON(raw, &in); err != nil {
		return err
	}
	edit, err := h.svc.EditMessage(r.Context(), c, room, id, in.Message, r.Header.Get(secretHeader))
	if err != nil {
		return err
	}
	return writeAction(w, edit)
}

func (h *Handler) serveDeleteMessage(w http.ResponseWriter, r *http.Request, c service.Caller, room, id string) error {
	del, err := h.deleteMessage(r.Context(), c, room, id, r.Header.Get(secretHeader))
	if err != nil {
		return err
	}
	return writeAction(w, del)
}

// deleteMessage erases the message id of room for c, for either adapter:
// a caller who may moderate the room (on a moderate mount, with an
// identity; anywhere, with a token's moderate grant) deletes any message,
// as a moderator, and the delete is audited; anyone else deletes their
// own, proven by identity or secret.
func (h *Handler) deleteMessage(ctx context.Context, c service.Caller, room, id, secret string) (rooms.Message, error) {
	asModerator := h.svc.MayModerate(c, room) == nil
	del, err := h.svc.DeleteMessage(ctx, c, room, id, secret, asModerator)
	if err != nil {
		return rooms.Message{}, err
	}
	if asModerator {
		h.audit(c, actionDelete, room, "message "+id)
	}
	return del, nil
}

// writeAction answers with the action a as stored, in the JSON of its
// stream event.
func writeAction(w http.ResponseWriter, a rooms.Message) error {
	return writeJSON(w, http.StatusOK, json.RawMessage(rooms.MessageEvent(a).JSON()))
}
