package service

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/token"
)

// Act is what a caller does in a room, as a token grants it.
type Act uint8

// The acts a token grants by room.
const (
	// ActRead is streams, history, presence and the room's entry in the
	// listing.
	ActRead Act = iota + 1
	// ActPost is submits, and an author's edits and deletes.
	ActPost
	// ActModerate is bans and a moderator's deletes.
	ActModerate
)

func (a Act) String() string {
	switch a {
	case ActPost:
		return "post"
	case ActModerate:
		return "moderate"
	}
	return "read"
}

// Moderates reports whether c's token grants moderating room, on any mount
// that verifies the token (see MayModerate).
func (c Caller) Moderates(room string) bool { return c.may(ActModerate, room) }

// may reports whether c's token grants act in room.
func (c Caller) may(act Act, room string) bool {
	if c.Grants == nil {
		return false
	}
	switch act {
	case ActPost:
		return c.Grants.Post.Match(room)
	case ActModerate:
		if room == rooms.AllRooms {
			// ? and ** match the name "*" too; only a grant of "*"
			// itself moderates every room at once.
			return slices.Contains(c.Grants.Moderate, rooms.AllRooms)
		}
		return c.Grants.Moderate.Match(room)
	}
	return c.Grants.Read.Match(room)
}

// PrivateRooms are the rooms that need a grant, for every handler of a
// config: rooms are shared by every handler, so a room that one handler
// names private is private on all of them, and one without tokens serves
// it to no one. Handlers add their patterns as they are set up, before
// any request; the zero value, and nil, hold none. It is safe for
// concurrent use.
type PrivateRooms struct {
	mu       sync.Mutex // serializes Add
	patterns atomic.Pointer[rooms.Patterns]
}

// NewPrivateRooms returns the private rooms of patterns.
func NewPrivateRooms(patterns ...string) *PrivateRooms {
	p := new(PrivateRooms)
	p.Add(patterns...)
	return p
}

// Add makes the rooms of patterns private.
func (p *PrivateRooms) Add(patterns ...string) {
	if len(patterns) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Copied, not appended to: readers hold the old slice.
	var next rooms.Patterns
	if old := p.patterns.Load(); old != nil {
		next = slices.Clone(*old)
	}
	next = append(next, patterns...)
	p.patterns.Store(&next)
}

// Match reports whether room is private.
func (p *PrivateRooms) Match(room string) bool {
	if p == nil {
		return false
	}
	patterns := p.patterns.Load()
	return patterns != nil && patterns.Match(room)
}

// none reports whether no room is private.
func (p *PrivateRooms) none() bool { return p == nil || p.patterns.Load() == nil }

// Private reports whether room needs a grant to read it, to post to it
// and to moderate it, on any handler of the config.
func (s *Service) Private(room string) bool { return s.cfg.Private.Match(room) }

// authorize refuses c act in room: with the refusal of c's token, which
// was sent and did not verify, in any room; and in a private room, without
// a token, or with one that does not grant act there.
func (s *Service) authorize(c Caller, act Act, room string) error {
	if c.Refused != nil {
		return c.Refused
	}
	if !s.Private(room) || c.may(act, room) {
		return nil
	}
	if c.Grants == nil {
		return &Error{Kind: Unauthenticated, Reason: string(token.Missing), Room: room,
			Message: fmt.Sprintf("room %q is private: send a token that grants %s access", room, act)}
	}
	return &Error{Kind: Forbidden, Reason: "no_grant", Room: room,
		Message: fmt.Sprintf("your token does not grant %s access to room %q", act, room)}
}

// TokenRefusal is the refusal of a caller whose token did not verify, for
// the *token.Error err: it says what failed, never what the token claims.
func TokenRefusal(err error) *Error {
	refused := &token.Error{Reason: token.Invalid, Why: token.WhyMalformed}
	errors.As(err, &refused)
	e := &Error{Kind: Unauthenticated, Reason: string(refused.Reason), Why: refused.Why}
	switch refused.Reason {
	case token.Expired:
		e.Message = "the token has expired: fetch a fresh one"
	default:
		e.Message = "the token is invalid: " + refused.Why
	}
	return e
}

// readable is the rooms of list that c may read.
func (s *Service) readable(c Caller, list []rooms.RoomInfo) []rooms.RoomInfo {
	if s.cfg.Private.none() {
		return list
	}
	kept := list[:0]
	for _, info := range list {
		if s.authorize(c, ActRead, info.Name) == nil {
			kept = append(kept, info)
		}
	}
	return kept
}
