package service

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Durations of bans.
const (
	// DefaultBanFor is how long a ban lasts when the request names no
	// duration.
	DefaultBanFor = 24 * time.Hour
	// Forever, as BanRequest.For, puts a ban that never ends.
	Forever = time.Duration(math.MaxInt64)
)

// maxBanReason is the longest reason of a ban, in characters.
const maxBanReason = 500

// BanRequest is a moderator's ban, as an adapter decoded it: of the
// author of Message, or of the verified User.
type BanRequest struct {
	Message string // the id of a message of the author to ban
	User    string // a verified identity to ban
	// For is how long the ban lasts: DefaultBanFor when 0, Forever for
	// ever.
	For    time.Duration
	Reason string
	// Purge asks for the author's kept messages in the room to be
	// deleted too, each by a delete of the room's log. A ban in every
	// room purges none: there is no one room to read.
	Purge bool
}

// MayModerate refuses a caller who may not moderate room (ban, unban,
// delete any message). Moderators are the callers whose token grants
// moderating room, on any mount, and, on a handler that moderates, those
// whose identity resolves. A private room is moderated by its token
// moderators alone, as it is read by its token readers alone.
func (s *Service) MayModerate(c Caller, room string) error {
	switch {
	case c.Refused != nil:
		return c.Refused
	case c.Moderates(room):
		if c.User == "" {
			// The audit names every moderator.
			return Refuse(Forbidden, "your token grants moderating but names no user: moderators are named")
		}
		return nil
	case !s.cfg.Moderate:
		return Refuse(Forbidden, "moderating is not allowed here")
	case c.CrossSite:
		// Before the identity: the adapters resolve none for a
		// request from another site, which signing in would not help.
		return crossSite()
	case room == rooms.AllRooms && (s.allowed != nil || !s.cfg.Private.none()):
		// Every room holds rooms this mount does not serve, or private
		// rooms, over which its moderators have no power.
		return Refuse(Forbidden, "moderators here ban in the rooms this mount serves, not in every room: some rooms are private or not served here")
	case s.Private(room):
		// Refused as reading it is: without a token, or without the
		// grant.
		return s.authorize(c, ActModerate, room)
	case c.User == "" || c.UserByToken:
		return Refuse(Unauthenticated, "sign in to moderate")
	}
	return nil
}

// checkBanRoom refuses a room that cannot hold bans: an invalid name, one
// outside the allowlist; AllRooms can.
func (s *Service) checkBanRoom(room string) error {
	if room == rooms.AllRooms {
		return nil
	}
	return s.CheckRoom(room)
}

// Ban puts a ban in room, or in every room (rooms.AllRooms), on the
// author of a message, or on a verified user, for the caller, a
// moderator. The author of an anonymous message is banned by the client
// key they posted from: their address, an IPv6 client by its /64.
func (s *Service) Ban(c Caller, room string, r BanRequest) (rooms.Ban, error) {
	if err := s.MayModerate(c, room); err != nil {
		return rooms.Ban{}, err
	}
	if err := s.checkBanRoom(room); err != nil {
		return rooms.Ban{}, err
	}
	switch {
	case (r.Message == "") == (r.User == ""):
		return rooms.Ban{}, Refuse(Invalid, "name either the message whose author to ban or the user")
	case r.For < 0:
		return rooms.Ban{}, Refuse(Invalid, "a ban's duration must be positive")
	case utf8.RuneCountInString(r.Reason) > maxBanReason || !utf8.ValidString(r.Reason):
		return rooms.Ban{}, Refuse(Invalid, fmt.Sprintf("a ban's reason must be valid UTF-8 of at most %d characters", maxBanReason))
	}
	subject := Caller{User: r.User}.key()
	if r.Message != "" {
		var err error
		if subject, err = s.authorOf(room, r.Message); err != nil {
			return rooms.Ban{}, err
		}
	}
	ban := rooms.Ban{Room: room, Subject: subject, Reason: r.Reason, By: c.User, Created: time.Now()}
	switch r.For {
	case Forever:
	case 0:
		ban.Expires = ban.Created.Add(DefaultBanFor)
	default:
		ban.Expires = ban.Created.Add(r.For)
	}
	ban, err := s.m.PutBan(ban)
	if err != nil {
		return rooms.Ban{}, roomsError(err)
	}
	if r.Purge && room != rooms.AllRooms {
		if err := s.purge(c, room, subject); err != nil {
			return ban, fmt.Errorf("banned, but purging their messages failed: %w", err)
		}
	}
	return ban, nil
}

// authorOf returns the client key of the author of the message of room
// with id, as Submit keys its author, to ban them: their identity, or the
// address an anonymous author posted from. A deleted message still names
// its author.
func (s *Service) authorOf(room, id string) (string, error) {
	if room == rooms.AllRooms {
		return "", Refuse(Invalid, "a message is named in its room: ban its author there, or by user in every room")
	}
	if _, _, ok := rooms.ParseID(id); !ok {
		return "", Refuse(Invalid, "malformed message id")
	}
	msg, err := s.m.Lookup(room, id)
	if err != nil {
		return "", roomsError(err)
	}
	return authorKey(msg), nil
}

// authorKey is the client key msg's author posted with.
func authorKey(msg rooms.Message) string {
	if msg.Verified {
		return Caller{User: msg.User}.key()
	}
	return "ip:" + msg.Author.ClientKey
}

// purge deletes, as a moderator, the messages of room that the author
// with the given client key posted and the room still keeps. The deletes
// go at once, so that a store that commits in
// batches erases them in one.
func (s *Service) purge(c Caller, room, subject string) error {
	var targets []string
	before := ""
	for {
		rep, err := s.m.Messages(room, "", before, maxPurgePage)
		if err != nil {
			return roomsError(err)
		}
		for _, m := range rep.Messages {
			if full, err := s.m.Lookup(room, m.ID); err == nil && !full.Deleted && authorKey(full) == subject {
				targets = append(targets, m.ID)
			}
		}
		if rep.Start || len(rep.Messages) == 0 {
			break
		}
		before = rep.Messages[0].ID
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, id := range targets {
		wg.Go(func() {
			_, errs[i] = s.act(room, rooms.Post{User: c.User, Verified: true, Action: rooms.ActionDelete, Target: id, ByModerator: true})
		})
	}
	wg.Wait()
	for _, err := range errs {
		// A message deleted meanwhile, or trimmed, is gone either way.
		if refused := (*Error)(nil); err != nil && !(errors.As(err, &refused) && refused.Kind == NotFound) {
			return err
		}
	}
	return nil
}

// maxPurgePage is how many messages a purge reads at a time.
const maxPurgePage = 200

// Bans lists the bans in force in room, or those of every room
// (rooms.AllRooms), oldest first, for a moderator: their subjects are
// client keys, addresses among them, for no one else to see.
func (s *Service) Bans(c Caller, room string) ([]rooms.Ban, error) {
	if err := s.MayModerate(c, room); err != nil {
		return nil, err
	}
	if err := s.checkBanRoom(room); err != nil {
		return nil, err
	}
	bans, err := s.m.Bans(room)
	return bans, roomsError(err)
}

// Unban lifts the ban of room with id, for a moderator.
func (s *Service) Unban(c Caller, room, id string) error {
	if err := s.MayModerate(c, room); err != nil {
		return err
	}
	if err := s.checkBanRoom(room); err != nil {
		return err
	}
	return roomsError(s.m.LiftBan(room, id))
}

// BannedUser is the verified identity that b bans, "" when it bans an
// anonymous author's client key, which is for no one to see.
func BannedUser(b rooms.Ban) string {
	if user, ok := strings.CutPrefix(b.Subject, userKeyPrefix); ok {
		return user
	}
	return ""
}

// checkBanned refuses the client, as Caller.key names them, when a ban
// holds them out of room, with the wait until it ends.
func (s *Service) checkBanned(room, client string) error {
	ban, banned := s.m.Banned(room, client)
	if !banned {
		return nil
	}
	e := &Error{Kind: Forbidden, Reason: "banned", Message: "you are banned from this room"}
	if !ban.Expires.IsZero() {
		e.RetryAfter = time.Until(ban.Expires)
		e.Message += " until " + ban.Expires.UTC().Format(time.RFC3339)
	}
	return e
}
