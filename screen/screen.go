// Package screen asks the site's own code about each post or edit before it
// is stored: it posts the message, signed as a Standard Webhooks request, to
// the screen's URL and reads the verdict, to allow it, refuse it with a
// reason for the poster, or replace its text. When the screen fails (a
// timeout, an error status, an answer it cannot read), its on_error policy
// decides. It knows nothing of Caddy or of the rooms.
package screen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/caddy-chat/caddy-chat/hooks"
)

// DefaultTimeout is how long a post waits for the screen where its config
// names no timeout: the poster is waiting too.
const DefaultTimeout = 2 * time.Second

// Kinds of a Request.
const (
	KindPost = "post"
	KindEdit = "edit"
)

// Request is what the screen is asked about, as its JSON payload.
type Request struct {
	// Kind is KindPost or KindEdit.
	Kind string `json:"kind"`
	Room string `json:"room"`
	// User is the author; Verified says the site's auth named them.
	User     string `json:"user"`
	Verified bool   `json:"verified"`
	Message  string `json:"message"`
	// Target is the id of the message an edit changes.
	Target string `json:"target,omitempty"`
	// Client is ClientHash of the poster's rate-limit key: the screen may
	// tell one poster's messages apart from another's, never learn the
	// address.
	Client string `json:"client"`
}

// Errors of Judge, wrapping the cause.
var (
	// ErrUnavailable: the screen failed and on_error refuses.
	ErrUnavailable = errors.New("the message screen is unavailable")
	// ErrStopping: the config stopped during the call. It refuses
	// whatever on_error says: a reload is no reason to let a post
	// through unscreened.
	ErrStopping = errors.New("the server is stopping")
)

// Config is one screen.
type Config struct {
	// Endpoint is the screen's URL, secret and timeout.
	Endpoint hooks.Endpoint
	// AllowOnError allows a message when the screen fails; by default it
	// is refused.
	AllowOnError bool
	// Observe, when set, is told of every call its caller waited for:
	// how long it took, and why it failed, nil when it did not. It is
	// where metrics and logs go.
	Observe func(took time.Duration, err error)
}

// Screen is one handler's screen. Its methods are safe for concurrent use:
// calls run concurrently, and no lock is held during one.
type Screen struct {
	cfg    Config
	client *hooks.Client
	where  string // the URL, its password redacted, for errors
}

// New returns the screen of cfg, calling it with client.
func New(client *hooks.Client, cfg Config) *Screen {
	if cfg.Endpoint.Timeout <= 0 {
		cfg.Endpoint.Timeout = DefaultTimeout
	}
	where := cfg.Endpoint.URL
	if u, err := url.Parse(where); err == nil {
		where = u.Redacted()
	}
	return &Screen{cfg: cfg, client: client, where: where}
}

// Judge asks the screen about r. A screen that fails gives an Allow verdict
// when on_error allows, else ErrUnavailable; ErrStopping when the client
// closed during the call. When ctx ends first, it returns ctx's error
// whatever on_error says, and the call is not observed.
func (s *Screen) Judge(ctx context.Context, r Request) (Verdict, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return Verdict{}, fmt.Errorf("encoding a screen request: %w", err)
	}
	start := time.Now()
	v, err := s.call(ctx, body)
	if err != nil && ctx.Err() != nil {
		// The poster hung up or ran out of time: there is no verdict, and
		// no fault of the screen's. on_error is for the screen's failures;
		// applied here, it would let a post through unscreened.
		return Verdict{}, fmt.Errorf("screening a %s in room %q: %w", r.Kind, r.Room, context.Cause(ctx))
	}
	if s.cfg.Observe != nil {
		s.cfg.Observe(time.Since(start), err)
	}
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, hooks.ErrClosed):
		return Verdict{}, fmt.Errorf("%w: %w", ErrStopping, err)
	case s.cfg.AllowOnError:
		return Verdict{Action: Allow}, nil
	}
	return Verdict{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// call posts body to the screen and reads its verdict.
func (s *Screen) call(ctx context.Context, body []byte) (Verdict, error) {
	answer, err := s.client.Post(ctx, s.cfg.Endpoint, hooks.NewID(), body)
	if err != nil {
		return Verdict{}, err
	}
	v, err := ParseVerdict(answer.Body)
	if err != nil {
		return Verdict{}, fmt.Errorf("%s: %w", s.where, err)
	}
	return v, nil
}
