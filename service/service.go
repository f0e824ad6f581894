// Package service is what the chat does for a caller, whatever protocol
// brought the request: post, open a stream, read history, delete a room,
// list the rooms and who is in them. A Service holds one handler's policy
// (the room allowlist, sign-in, reserved names, sizes and per-client limits)
// over the rooms' Manager. The HTTP and gRPC adapters resolve the Caller,
// decode requests into its calls, and encode its answers and refusals
// (Error) for their protocol. It knows nothing of Caddy, HTTP or a wire
// format, so it is tested without them.
package service

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddy-chat/caddy-chat/blocklist"
	"github.com/caddy-chat/caddy-chat/ratelimit"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/screen"
	"github.com/caddy-chat/caddy-chat/token"
)

// Config is one handler's policy.
type Config struct {
	// Rooms is the allowlist: only these rooms exist for the handler.
	// Empty allows any valid name.
	Rooms []string
	// IdentityRequired refuses posts from callers without an identity.
	IdentityRequired bool
	// ReserveNames refuses an unverified post under a name that a verified
	// author has posted under in the room.
	ReserveNames bool
	// AllowDelete lets callers delete rooms.
	AllowDelete bool
	// Moderate makes the callers whose identity resolves moderators of
	// every room but the private ones (see MayModerate).
	Moderate bool
	// BlockWords refuses a message containing one of its words; nil
	// blocks none.
	BlockWords *blocklist.List
	// EditWindow is how long after posting an author may edit or delete
	// a message (see EditMessage); 0 lets authors do neither. A handler that
	// names none sets DefaultEditWindow.
	EditWindow time.Duration
	// Screen, when set, judges every post and edit before it is stored;
	// nil stores them unjudged.
	Screen *screen.Screen
	// MaxMessageSize is the largest message, in bytes.
	MaxMessageSize int64
	// RatePosts posts per RateWindow per client; 0 for no limit.
	RatePosts  int
	RateWindow time.Duration
	// MaxStreamsPerClient is how many streams a client may have open.
	MaxStreamsPerClient int
	// MaxNewRoomsPerClient is how many rooms a client may make per
	// NewRoomsWindow.
	MaxNewRoomsPerClient int
	NewRoomsWindow       time.Duration
	// Counter counts the per-client limits of posts and new rooms in the
	// store that several nodes share, so that they hold across the nodes;
	// nil counts them in this process. CounterTimeout bounds each count.
	Counter        ratelimit.SharedCounter
	CounterTimeout time.Duration
	// Private are the rooms whose readers need a token's read grant, and
	// whose authors its post grant: those of every handler of the config,
	// shared by their services. nil for none.
	Private *PrivateRooms
}

// Service is one handler's chat. Its methods are safe for concurrent use.
type Service struct {
	cfg     Config
	m       *rooms.Manager
	allowed map[string]bool
	limiter *windowLimit // nil without a rate limit
	created *windowLimit // new rooms per client
	streams *ratelimit.Counter
}

// New returns the service of cfg over m.
func New(m *rooms.Manager, cfg Config) *Service {
	s := &Service{cfg: cfg, m: m, streams: ratelimit.NewCounter(cfg.MaxStreamsPerClient)}
	if len(cfg.Rooms) > 0 {
		s.allowed = make(map[string]bool, len(cfg.Rooms))
		for _, name := range cfg.Rooms {
			s.allowed[name] = true
		}
	}
	if cfg.RatePosts > 0 {
		s.limiter = newWindowLimit("posts", cfg.RatePosts, cfg.RateWindow, cfg.Counter, cfg.CounterTimeout)
	}
	s.created = newWindowLimit("rooms", cfg.MaxNewRoomsPerClient, cfg.NewRoomsWindow, cfg.Counter, cfg.CounterTimeout)
	return s
}

// Caller is who sent a request, resolved once by the adapter that took it.
type Caller struct {
	// User is the identity that the site's auth gave, or else the user
	// of the caller's token; "" when neither did: the caller is then an
	// unverified author, who names themselves.
	User string
	// UserByToken is set when User is the token's, no identity having
	// resolved: the caller is a verified author, but moderates only the
	// rooms its token grants (see MayModerate).
	UserByToken bool
	// Addr is the client's address, as the adapter determined it
	// (trusted proxies considered).
	Addr string
	// CrossSite is set when a browser sent the request from a page of an
	// origin that may not act here: it may carry the site's cookies
	// without its author meaning to post.
	CrossSite bool
	// Grants are the rooms the caller's token grants; nil without a
	// verified token.
	Grants *token.Grants
	// Expires is when the caller's token expires: a stream it opened ends
	// then. Zero without a token.
	Expires time.Time
	// Refused is the refusal of a token that was sent and did not verify:
	// every act of the caller is refused with it, in any room, as the
	// caller believes to be signed in.
	Refused *Error
}

// key names the caller for limits per client: the identity when there is
// one, else the address, an IPv6 client by its /64. The prefixes keep an
// identity that looks like an address apart from that address.
func (c Caller) key() string {
	if c.User != "" {
		return userKeyPrefix + c.User
	}
	return "ip:" + ratelimit.AddrKey(c.Addr)
}

// userKeyPrefix begins the key of a caller with an identity.
const userKeyPrefix = "id:"

// CheckRoom refuses an invalid room name, or one outside the allowlist.
func (s *Service) CheckRoom(name string) error {
	if !rooms.ValidName(name) {
		return Refuse(Invalid, rooms.ErrInvalidName.Error())
	}
	if s.allowed != nil && !s.allowed[name] {
		return Refuse(Forbidden, fmt.Sprintf("room %q is not open here", name))
	}
	return nil
}

// DefaultUser is the author of a message that names none.
const DefaultUser = "anonymous"

// maxUserLen is the longest user name, in characters.
const maxUserLen = 64

// ValidUser reports whether name is 1-64 printable characters, not all of
// them blank or invisible: a page would show no name.
func ValidUser(name string) bool {
	if name == "" || utf8.RuneCountInString(name) > maxUserLen {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return rooms.FoldName(name) != ""
}

// checkMessage refuses an empty or oversized message, control characters
// other than tab and line breaks (a NUL or an escape sequence has no place in
// a chat line and only ever arrives to break something), and a blocked
// word. A post and an edit alike pass it.
func (s *Service) checkMessage(text string) error {
	switch {
	case text == "":
		return Refuse(Invalid, "message is missing or empty")
	case int64(len(text)) > s.cfg.MaxMessageSize:
		return Refuse(TooLarge, fmt.Sprintf("message is over %d bytes", s.cfg.MaxMessageSize))
	case strings.ContainsFunc(text, func(r rune) bool { return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' }):
		return Refuse(Invalid, "message contains control characters")
	}
	return s.checkBlocked("message", text)
}

// checkBlocked refuses text, the field named what, when it holds a
// blocked word. The word is not named: the list is the site's to keep.
func (s *Service) checkBlocked(what, text string) error {
	if _, found := s.cfg.BlockWords.Find(text); found {
		return &Error{Kind: Forbidden, Reason: "blocked_word", Message: what + " contains a blocked word"}
	}
	return nil
}

// validIdempotencyKey reports whether key is 1-64 visible ASCII characters.
func validIdempotencyKey(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// Rooms lists the rooms this handler serves that c may read: all of them,
// or with an allowlist, exactly the allowed ones, whether they exist yet or
// not; private rooms only where c's token grants reading them.
func (s *Service) Rooms(c Caller) ([]rooms.RoomInfo, error) {
	if c.Refused != nil {
		return nil, c.Refused
	}
	return s.readable(c, s.rooms()), nil
}

// rooms lists the rooms this handler serves.
func (s *Service) rooms() []rooms.RoomInfo {
	list := s.m.Rooms()
	if s.allowed == nil {
		return list
	}
	byName := make(map[string]rooms.RoomInfo, len(list))
	for _, info := range list {
		byName[info.Name] = info
	}
	list = list[:0]
	for _, name := range s.cfg.Rooms {
		info, ok := byName[name]
		if !ok {
			info = rooms.RoomInfo{Name: name}
		}
		list = append(list, info)
	}
	return list
}

// Limits of History.
const (
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 1000
)

// historyLimitProblem refuses a history limit.
var historyLimitProblem = fmt.Sprintf("limit must be a whole number from 1 to %d", MaxHistoryLimit)

// HistoryLimit refuses a limit of History out of range, for an adapter
// that reads it from text.
func HistoryLimit(text string) (int, error) {
	n, err := strconv.Atoi(text)
	if err != nil {
		return 0, Refuse(Invalid, historyLimitProblem)
	}
	return n, nil
}

// History reads up to limit retained messages of room after the id after,
// or the newest limit without after; with before, only those older than
// the id before (see rooms.Manager.Messages), where c may read room.
func (s *Service) History(c Caller, room, after, before string, limit int) (rooms.Replay, error) {
	if err := s.CheckRoom(room); err != nil {
		return rooms.Replay{}, err
	}
	if err := s.authorize(c, ActRead, room); err != nil {
		return rooms.Replay{}, err
	}
	if limit < 1 || limit > MaxHistoryLimit {
		return rooms.Replay{}, Refuse(Invalid, historyLimitProblem)
	}
	rep, err := s.m.Messages(room, after, before, limit)
	return rep, roomsError(err)
}

// Presence is who is in a room, where c may read it.
func (s *Service) Presence(c Caller, room string) (rooms.Presence, error) {
	if err := s.CheckRoom(room); err != nil {
		return rooms.Presence{}, err
	}
	if err := s.authorize(c, ActRead, room); err != nil {
		return rooms.Presence{}, err
	}
	p, err := s.m.Presence(room)
	return p, roomsError(err)
}

// Delete removes a room and its history, where the handler allows it: a
// private room for a caller whose token grants moderating it. Before that
// grant, a private room is refused alike whether it exists or not.
func (s *Service) Delete(c Caller, room string) error {
	if !s.cfg.AllowDelete {
		return Refuse(Forbidden, "deleting rooms is not allowed here")
	}
	if c.CrossSite {
		return crossSite()
	}
	if err := s.CheckRoom(room); err != nil {
		return err
	}
	if err := s.authorize(c, ActModerate, room); err != nil {
		return err
	}
	return roomsError(s.m.Delete(room))
}

// crossSite refuses a request a browser sent from another site.
func crossSite() error {
	return &Error{Kind: Forbidden, Reason: "cross_site", Message: "cross-site request refused"}
}

// windowLimit is a limit of events per client per window, such as
// rate_limit: counted in this process, or, with a store that several nodes
// share, in the store, so that it holds across the nodes.
type windowLimit struct {
	local   *ratelimit.Limiter
	shared  *ratelimit.Shared
	timeout time.Duration
}

// newWindowLimit returns a limit of limit events per window, named name
// among the limits that counter keeps, or counted here when counter is nil.
func newWindowLimit(name string, limit int, window time.Duration, counter ratelimit.SharedCounter, timeout time.Duration) *windowLimit {
	if counter != nil {
		return &windowLimit{shared: ratelimit.NewShared(name, limit, window, counter), timeout: timeout}
	}
	return &windowLimit{local: ratelimit.New(limit, window)}
}

// check counts one event of client and returns refuse's error past the
// limit. A shared counter that does not answer within its timeout refuses
// the event as the store being unavailable: it would refuse the submit
// anyway.
func (l *windowLimit) check(ctx context.Context, client string, refuse func(retryAfter time.Duration) error) error {
	if l.local != nil {
		if ok, retry := l.local.Allow(client, time.Now()); !ok {
			return refuse(retry)
		}
		return nil
	}
	// The request's context has no deadline, and the client's read
	// timeout may be longer.
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	ok, retry, err := l.shared.Allow(ctx, client)
	if err != nil {
		return roomsError(fmt.Errorf("checking a limit: %w: %w", rooms.ErrUnavailable, err))
	}
	if !ok {
		return refuse(retry)
	}
	return nil
}
