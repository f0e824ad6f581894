package chat

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
)

// The moderation routes, for the callers of a moderate mount and those
// whose token grants moderating the room: POST and GET
// /rooms/{room}/bans put a ban and list them, DELETE
// /rooms/{room}/bans/{id} lifts one. Room * holds the bans of every room.
// The service decides who may; these only decode and answer, and the
// audit of every action is written here, once for both adapters.

// banBody is the body of POST /rooms/{room}/bans.
type banBody struct {
	Message string `json:"message"` // whose author to ban
	User    string `json:"user"`    // a verified identity to ban
	For     string `json:"for"`     // a duration, "forever", or "" for the default
	Reason  string `json:"reason"`
	Purge   bool   `json:"purge"`
}

// banForever is how a ban that never ends is asked for.
const banForever = "forever"

// banDuration reads the for of a ban: a duration such as 24h or 7d,
// "forever", or "" for service.DefaultBanFor.
func banDuration(text string) (time.Duration, error) {
	switch text {
	case "":
		return 0, nil
	case banForever:
		return service.Forever, nil
	}
	d, err := caddy.ParseDuration(text)
	if err != nil || d <= 0 {
		return 0, badRequest(`"for" must be a positive duration such as 24h or 7d, or "forever"`)
	}
	return d, nil
}

// banView is a ban as moderators see it. The client key it holds is not
// in it: for an anonymous author that is their address.
type banView struct {
	ID   string `json:"id"`
	Room string `json:"room"`
	// User is the verified identity banned; empty for an anonymous
	// author, banned by their address.
	User    string     `json:"user,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	By      string     `json:"by"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires"` // null for a ban that never ends
	// PurgeFailed is set when the ban is in force but deleting the
	// author's messages failed: some remain, for a moderator to delete
	// or to purge with a ban again.
	PurgeFailed bool `json:"purge_failed,omitempty"`
}

func viewOfBan(b rooms.Ban) banView {
	v := banView{ID: b.ID, Room: b.Room, User: service.BannedUser(b), Reason: b.Reason, By: b.By, Created: b.Created}
	if !b.Expires.IsZero() {
		v.Expires = &b.Expires
	}
	return v
}

func (h *Handler) servePutBan(w http.ResponseWriter, r *http.Request, c service.Caller, room string) error {
	// Refused before the body is read: nothing of it matters to a caller
	// who may not ban.
	if err := h.svc.MayModerate(c, room); err != nil {
		return err
	}
	_, raw, err := readBody(r.Header, r.Body, h.MaxBodySize, false)
	if err != nil {
		return err
	}
	var in banBody
	if err := decodeJSON(raw, &in); err != nil {
		return err
	}
	d, err := banDuration(in.For)
	if err != nil {
		return err
	}
	ban, err := h.ban(c, room, service.BanRequest{Message: in.Message, User: in.User, For: d, Reason: in.Reason, Purge: in.Purge})
	if ban.ID == "" {
		return err
	}
	// A ban in force is answered as made, a failed purge with it: an
	// error would invite a retry, which would put a second ban.
	view := viewOfBan(ban)
	view.PurgeFailed = err != nil
	return writeJSON(w, http.StatusCreated, view)
}

func (h *Handler) serveBans(w http.ResponseWriter, c service.Caller, room string) error {
	bans, err := h.svc.Bans(c, room)
	if err != nil {
		return err
	}
	views := make([]banView, len(bans))
	for i, b := range bans {
		views[i] = viewOfBan(b)
	}
	return writeJSON(w, http.StatusOK, struct {
		Bans []banView `json:"bans"`
	}{views})
}

func (h *Handler) serveLiftBan(w http.ResponseWriter, c service.Caller, room, id string) error {
	if err := h.unban(c, room, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ban puts a ban for c, for either adapter, and audits it. Its target is
// the message or the user named, never the client key banned. A ban put
// whose purge failed is returned with the purge's error, and audited.
func (h *Handler) ban(c service.Caller, room string, req service.BanRequest) (rooms.Ban, error) {
	ban, err := h.svc.Ban(c, room, req)
	if ban.ID == "" {
		return rooms.Ban{}, err
	}
	target := "user " + req.User
	if req.Message != "" {
		target = "message " + req.Message
	}
	expires := zap.String("expires", "never")
	if !ban.Expires.IsZero() {
		expires = zap.Time("expires", ban.Expires)
	}
	fields := []zap.Field{zap.String("ban", ban.ID), expires, zap.Bool("purge", req.Purge)}
	if err != nil {
		fields = append(fields, zap.NamedError("purge_error", err))
	}
	h.audit(c, actionBan, room, target, fields...)
	return ban, err
}

// unban lifts a ban for c, for either adapter, and audits it.
func (h *Handler) unban(c service.Caller, room, id string) error {
	if err := h.svc.Unban(c, room, id); err != nil {
		return err
	}
	h.audit(c, actionUnban, room, "ban "+id)
	return nil
}

// The moderation actions, as the audit log and
// caddy_chat_moderation_total name them.
const (
	actionBan    = "ban"
	actionUnban  = "unban"
	actionDelete = "delete" // of a message
)

// audit logs a moderator's action at INFO, for the site to tell who did
// what, and counts it.
func (h *Handler) audit(c service.Caller, action, room, target string, more ...zap.Field) {
	moderationTotal.WithLabelValues(action).Inc()
	h.logger.Info("moderation", append([]zap.Field{
		zap.String("action", action),
		zap.String("moderator", c.User),
		zap.String("room", room),
		zap.String("target", target),
	}, more...)...)
}
