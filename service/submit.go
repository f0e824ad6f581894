package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-chat/caddy-chat/ratelimit"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/screen"
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
	// secret was handed out with the first answer. It is text safe as it
	// is in a header, a URL or JSON.
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
	if !verified {
		// Every page shows the name beside the message.
		if err := s.checkBlocked("user", p.User); err != nil {
			return rooms.Message{}, false, err
		}
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
	// With a screen or a shared limit, which cost a round trip each, the
	// key is looked up first, across the nodes: a retry of a stored
	// message is answered, never counted or screened again.
	early := s.cfg.Screen != nil || s.limiter != nil && s.limiter.shared != nil
	if early {
		msg, repeat, err = s.m.Repeat(p.Room, post)
		// A key reused for another text may be a retry of a post whose
		// text the screen replaced: the screen's verdict tells, and
		// Submit answers it as the repeat it is.
		reusedScreened := s.cfg.Screen != nil && errors.Is(err, rooms.ErrKeyReused)
		if repeat || err != nil && !reusedScreened {
			return msg, repeat, roomsError(err)
		}
	}
	pastLimit := false // a keyed post the limit refuses unless Submit finds it repeats one
	if s.limiter != nil {
		if !early {
			// Asked after the repeat lookup: a retry of a stored
			// message is answered, never refused.
			post.Admit = func() error { return s.limiter.check(ctx, client, tooManyPosts) }
		} else if err := s.limiter.check(ctx, client, tooManyPosts); err != nil {
			// Counted before the screen, which a client past its limit
			// must not cost a call, and before the room's lock, where
			// a round trip would hold up the room's other submits. A
			// twin under the same key, stored since the lookup, is
			// still answered: a keyed post past the limit is refused
			// once it is known to repeat no stored message.
			var limited *Error
			if p.Key == "" || !errors.As(err, &limited) || limited.Kind != RateLimited {
				return rooms.Message{}, false, err
			}
			post.Admit = func() error { return err }
			pastLimit = true
		}
	}
	if s.cfg.Screen != nil && !pastLimit {
		text, err := s.screen(ctx, screen.Request{
			Kind: screen.KindPost, Room: p.Room, User: p.User, Verified: verified,
			Message: p.Message, Client: screen.ClientHash(client),
		})
		if err != nil {
			return rooms.Message{}, false, err
		}
		post.Text = text
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

// screen asks the handler's screen about r and returns the text to store:
// r's, or the screen's replacement, which passes the checks a post does.
// The screen's refusal, or its failure where on_error refuses, is returned
// as a refusal. Nothing is locked meanwhile: the room's order is the order
// in which posts come through their screen.
func (s *Service) screen(ctx context.Context, r screen.Request) (string, error) {
	v, err := s.cfg.Screen.Judge(ctx, r)
	switch {
	case errors.Is(err, screen.ErrStopping):
		return "", &Error{Kind: Unavailable, Reason: "stopping", Message: "the server is restarting; try again", RetryAfter: CapacityRetry}
	case errors.Is(err, screen.ErrUnavailable):
		// 503, not 403: nothing is wrong with the message, and the
		// poster may send it again (with its idempotency key).
		return "", &Error{Kind: Unavailable, Reason: "screen_unavailable", Message: "messages cannot be checked right now; try again", RetryAfter: CapacityRetry}
	case err != nil:
		return "", err
	}
	switch v.Action {
	case screen.Refuse:
		reason := v.Reason
		if reason == "" {
			reason = "this message was refused"
		}
		return "", &Error{Kind: Forbidden, Reason: "screen_refused", Message: reason}
	case screen.Replace:
		if err := s.checkMessage(v.Message); err != nil {
			return "", err
		}
		return v.Message, nil
	}
	return r.Message, nil
}

// tooManyPosts refuses a post, an edit or a delete past the rate limit.
func tooManyPosts(retry time.Duration) error {
	return &Error{Kind: RateLimited, Message: "too many posts; slow down", RetryAfter: retry}
}
