package service

import (
	"fmt"
	"sync"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/token"
)

// StreamRequest is where a stream starts and who it is, as an adapter
// decoded it.
type StreamRequest struct {
	Room        string
	LastEventID string // resume after this message
	History     int    // without LastEventID, start with this many recent messages
	// User names the stream in the room's presence; the caller's identity
	// wins, and a name reserved for a verified author counts as anonymous.
	User string
	// Presence asks for presence events.
	Presence bool
}

// Stream is an open stream: its subscription, and the slot it holds among
// its client's streams. Close it when the stream ends.
type Stream struct {
	*rooms.Subscription
	release func()
	expiry  *time.Timer // nil without a token
}

// Close closes the subscription and gives the slot back. It is safe to call
// more than once.
func (st *Stream) Close() {
	if st.expiry != nil {
		st.expiry.Stop()
	}
	st.Subscription.Close()
	st.release()
}

// OpenStream checks a stream's request, counts it against its client's
// streams and subscribes to its room; wake runs when events are queued for
// it (see rooms.Manager.Subscribe). A refusal holds nothing. A stream
// opened with a token ends when the token expires, with an expired event
// (see rooms.Subscription.Expire): its reader comes back with a fresh one
// and the id of the last message it received. A token already past its
// exp, which verifies within the leeway of clock skew, opens none.
func (s *Service) OpenStream(c Caller, req StreamRequest, wake func()) (*Stream, error) {
	if err := s.CheckRoom(req.Room); err != nil {
		return nil, err
	}
	if err := s.authorize(c, ActRead, req.Room); err != nil {
		return nil, err
	}
	if !c.Expires.IsZero() && !time.Now().Before(c.Expires) {
		// Past exp, within the verifier's leeway: the stream would end
		// at once, and its reader come back at once with the same token.
		return nil, TokenRefusal(&token.Error{Reason: token.Expired})
	}
	if req.History < 0 {
		return nil, Refuse(Invalid, "history must be a whole number, 0 or more")
	}
	pos := rooms.Position{
		LastEventID: req.LastEventID, History: req.History,
		WatchPresence: req.Presence, ReserveNames: s.cfg.ReserveNames,
	}
	if c.User != "" {
		pos.User, pos.UserVerified = c.User, true
	} else if req.User != "" {
		if !ValidUser(req.User) {
			return nil, Refuse(Invalid, "user must be 1-64 printable characters")
		}
		pos.User = req.User
	}
	key := c.key()
	if !s.streams.Acquire(key) {
		return nil, &Error{Kind: RateLimited, Reason: "too_many_streams", RetryAfter: CapacityRetry,
			Message: fmt.Sprintf("this client has %d streams open, the most allowed; close one", s.cfg.MaxStreamsPerClient)}
	}
	release := sync.OnceFunc(func() { s.streams.Release(key) })
	sub, err := s.m.Subscribe(req.Room, pos, wake)
	if err != nil {
		release()
		return nil, roomsError(err)
	}
	st := &Stream{Subscription: sub, release: release}
	if !c.Expires.IsZero() {
		// Checked once, here: a delivery checks nothing.
		st.expiry = time.AfterFunc(time.Until(c.Expires), sub.Expire)
	}
	return st, nil
}
