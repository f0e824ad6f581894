package service

import (
	"context"
	"crypto/subtle"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/screen"
)

// DefaultEditWindow is how long an author may edit or delete a message
// where the handler names no window.
const DefaultEditWindow = 15 * time.Minute

// EditMessage replaces the text of the message id in room with text, for its
// author within the edit window, and returns the edit as stored: an entry
// of the room's log, which its streams receive. The author proves
// authorship by identity when the message was posted with one, else with
// secret, as Submit handed it out. The text is checked, and screened, as a
// post's is.
func (s *Service) EditMessage(ctx context.Context, c Caller, room, id, text, secret string) (rooms.Message, error) {
	if err := s.MayPost(c); err != nil {
		return rooms.Message{}, err
	}
	if err := s.CheckRoom(room); err != nil {
		return rooms.Message{}, err
	}
	if err := s.authorize(c, ActPost, room); err != nil {
		return rooms.Message{}, err
	}
	if err := s.checkMessage(text); err != nil {
		return rooms.Message{}, err
	}
	msg, err := s.authored(c, room, id, secret)
	if err != nil {
		return rooms.Message{}, err
	}
	// A banned author may not change what they wrote either.
	if err := s.checkBanned(room, authorKey(msg)); err != nil {
		return rooms.Message{}, err
	}
	if err := s.countAction(ctx, c); err != nil {
		return rooms.Message{}, err
	}
	if s.cfg.Screen != nil {
		if text, err = s.screen(ctx, screen.Request{
			Kind: screen.KindEdit, Room: room, User: msg.User, Verified: msg.Verified,
			Message: text, Target: id, Client: screen.ClientHash(c.key()),
		}); err != nil {
			return rooms.Message{}, err
		}
	}
	return s.act(room, rooms.Post{User: msg.User, Verified: msg.Verified, Action: rooms.ActionEdit, Target: id, Text: text})
}

// DeleteMessage erases the message id in room and returns the delete as stored:
// an entry of the room's log, which its streams receive. A caller who
// deletes asModerator deletes any message where MayModerate lets them;
// anyone else only their own, within the edit window, proven as for
// EditMessage, where they may post.
func (s *Service) DeleteMessage(ctx context.Context, c Caller, room, id, secret string, asModerator bool) (rooms.Message, error) {
	if c.CrossSite {
		return rooms.Message{}, crossSite()
	}
	if err := s.CheckRoom(room); err != nil {
		return rooms.Message{}, err
	}
	if asModerator {
		if err := s.MayModerate(c, room); err != nil {
			return rooms.Message{}, err
		}
		return s.act(room, rooms.Post{User: c.User, Verified: true, Action: rooms.ActionDelete, Target: id, ByModerator: true})
	}
	if err := s.MayPost(c); err != nil {
		return rooms.Message{}, err
	}
	if err := s.authorize(c, ActPost, room); err != nil {
		return rooms.Message{}, err
	}
	msg, err := s.authored(c, room, id, secret)
	if err != nil {
		return rooms.Message{}, err
	}
	if err := s.countAction(ctx, c); err != nil {
		return rooms.Message{}, err
	}
	return s.act(room, rooms.Post{User: msg.User, Verified: msg.Verified, Action: rooms.ActionDelete, Target: id})
}

// countAction counts an author's edit or delete as a post against the
// rate limit: each is an entry of the room's log, which takes a place in
// its history, reaches every stream and every webhook, as a post does.
func (s *Service) countAction(ctx context.Context, c Caller) error {
	if s.limiter == nil {
		return nil
	}
	return s.limiter.check(ctx, c.key(), tooManyPosts)
}

// authored returns the message id of room when c wrote it, proven by
// identity or secret, and the edit window still lets its author change it.
func (s *Service) authored(c Caller, room, id, secret string) (rooms.Message, error) {
	msg, err := s.m.Lookup(room, id)
	if err != nil {
		return rooms.Message{}, roomsError(err)
	}
	if msg.Deleted {
		return rooms.Message{}, noMessage()
	}
	if !isAuthor(c, msg, secret) {
		return rooms.Message{}, &Error{Kind: Forbidden, Reason: "not_yours", Message: "only its author can change this message"}
	}
	window := s.cfg.EditWindow
	if window <= 0 || time.Since(msg.Time) > window {
		return rooms.Message{}, &Error{Kind: Forbidden, Reason: "edit_window_passed",
			Message: "this message can no longer be changed: the time to edit it has passed"}
	}
	return msg, nil
}

// isAuthor reports whether c wrote msg: an author with an identity by
// that identity, one without by the message's secret.
func isAuthor(c Caller, msg rooms.Message, secret string) bool {
	if msg.Verified {
		return c.User != "" && c.User == msg.User
	}
	digest := msg.Author.SecretDigest
	return secret != "" && digest != "" && subtle.ConstantTimeCompare([]byte(rooms.SecretDigest(secret)), []byte(digest)) == 1
}

// act stores the action p in room.
func (s *Service) act(room string, p rooms.Post) (rooms.Message, error) {
	msg, _, err := s.m.Submit(room, p)
	return msg, roomsError(err)
}

// noMessage refuses an action on a message the room does not hold.
func noMessage() error {
	return &Error{Kind: NotFound, Reason: "not_found", Message: rooms.ErrNoMessage.Error()}
}
