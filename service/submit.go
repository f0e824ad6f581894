package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Post is a message to submit, as an adapter decoded it.
type Post struct {
	Room    string
	User    string // the author the request names; the caller's identity wins
	Message string
	// Key is the idempotency key; KeyGiven tells an empty key, which is
	// refused, from none.
	Key      string
	KeyGiven bool
}

// MayPost refuses a caller who may post nothing here: a browser on another
// site, or, where sign-in is required, a caller without an identity. An
// adapter asks it before it reads the post.
func (s *Service) MayPost(c Caller) error {
	if c.CrossSite {
		return crossSite()
	}
	if c.Refused != nil {
		return c.Refused
	}
	if s.cfg.IdentityRequired && c.User == "" {
		return Refuse(Unauthenticated, "sign in to post here")
	}
	return nil
}

// Submit checks a post and stores it: the one path every adapter's posts
// take, so that they share validation, names, keys and limits. repeat is
// set when the key named a message already stored, which is returned.
func (s *Service) Submit(ctx context.Context, c Caller, p Post) (msg rooms.Message, repeat bool, err error) {
	if err := s.MayPost(c); err != nil {
		return rooms.Message{}, false, err
	}
	if err := s.CheckRoom(p.Room); err != nil {
		return rooms.Message{}, false, err
	}
	if err := s.authorize(c, ActPost, p.Room); err != nil {
		return rooms.Message{}, false, err
	}
	verified := c.User != ""
	if verified {
		p.User = c.User
	} else if p.User == "" {
		p.User = DefaultUser
	}
	if !ValidUser(p.User) {
		return rooms.Message{}, false, Refuse(Invalid, "user must be 1-64 printable characters")
	}
	if err := s.checkMessage(p.Message); err != nil {
		return rooms.Message{}, false, err
	}
	if p.KeyGiven && !validIdempotencyKey(p.Key) {
		return rooms.Message{}, false, Refuse(Invalid, "Idempotency-Key must be 1-64 visible ASCII characters")
	}
	client := c.key()
	post := rooms.Post{
		User: p.User, Text: p.Message, Verified: verified,
		Key: p.Key, Scope: client, ReserveNames: s.cfg.ReserveNames,
	}
	if !verified {
		// Behind one address there may be many people, each naming
		// themselves: their keys are theirs.
		post.Scope += "\x00" + p.User
	}
	if s.limiter != nil {
		refuse := func(retry time.Duration) error {
			return &Error{Kind: RateLimited, Message: "too many posts; slow down", RetryAfter: retry}
		}
		if s.limiter.shared == nil {
			// Asked after the repeat lookup: a retry of a stored
			// message is answered, never refused.
			post.Admit = func() error { return s.limiter.check(ctx, client, refuse) }
		} else {
			// The count, a round trip to the shared store, is taken
			// before the room's lock, where it would hold up the
			// room's other submits, and after the key is looked up
			// across the nodes: a retry is answered, not counted.
			if msg, repeat, err = s.m.Repeat(p.Room, post); err != nil || repeat {
				return msg, repeat, roomsError(err)
			}
			if err := s.limiter.check(ctx, client, refuse); err != nil {
				// A twin under the same key, stored since the
				// lookup, is still answered: a keyed post past
				// the limit is refused once it is known to
				// repeat no stored message.
				var refused *Error
				if p.Key == "" || !errors.As(err, &refused) || refused.Kind != RateLimited {
					return rooms.Message{}, false, err
				}
				post.Admit = func() error { return err }
			}
		}
	}
	post.Create = func() error {
		return s.created.check(ctx, client, func(retry time.Duration) error {
			return &Error{Kind: RateLimited, Reason: "too_many_rooms", RetryAfter: retry,
				Message: fmt.Sprintf("this client has made %d new rooms within the hour, the most allowed; post to an existing room", s.cfg.MaxNewRoomsPerClient)}
		})
	}
	msg, repeat, err = s.m.Submit(p.Room, post)
	if err != nil {
		return rooms.Message{}, false, roomsError(err)
	}
	return msg, repeat, nil
}
