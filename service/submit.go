package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-chat/caddy-chat/ratelimit"
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

// Posted is the answer to a submit.
type Posted struct {
	Message rooms.Message
	// Repeat is set when the idempotency key named a message stored
	// before, which Message is.
	Repeat bool
	// Secret proves, to EditMessage and DeleteMessage, that the caller wrote Message:
	// made for an author without an identity, handed out only here, and
	// kept by the store only as a digest. It is "" for an author with an
	// identity, who proves it with the identity, and for a repeat, whose
	// secret was handed out with the first answer.
	Secret string
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
// take, so that they share validation, names, keys and limits.
func (s *Service) Submit(ctx context.Context, c Caller, p Post) (Posted, error) {
	var secret string
	msg, repeat, err := s.submit(ctx, c, p, &secret)
	if err != nil || repeat {
		secret = ""
	}
	return Posted{Message: msg, Repeat: repeat, Secret: secret}, err
}

// submit is Submit, which it hands the secret of an anonymous author's
// message.
func (s *Service) submit(ctx context.Context, c Caller, p Post, secret *string) (msg rooms.Message, repeat bool, err error) {
	if err := s.MayPost(c); err != nil {
		return rooms.Message{}, false, err
	}
	if err := s.CheckRoom(p.Room); err != nil {
		return rooms.Message{}, false, err
	}
	if err := s.authorize(c, ActPost, p.Room); err != nil {
		return rooms.Message{}, false, err
	}
	// A banned author is refused before any limit is counted: their
	// posts are none of the limit's business.
	client := c.key()
	if err := s.checkBanned(p.Room, client); err != nil {
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
	post := rooms.Post{
		User: p.User, Text: p.Message, Verified: verified,
		Key: p.Key, Scope: client, ReserveNames: s.cfg.ReserveNames,
		Author: rooms.Authorship{ClientKey: ratelimit.AddrKey(c.Addr)},
	}
	if !verified {
		// Behind one address there may be many people, each naming
		// themselves: their keys are theirs.
		post.Scope += "\x00" + p.User
		*secret = newSecret()
		post.Author.SecretDigest = rooms.SecretDigest(*secret)
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

// newSecret returns a secret that no one can guess: 128 random bits, as
// text safe in a header, a URL or JSON.
func newSecret() string { return rand.Text() }
