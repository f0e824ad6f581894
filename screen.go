package chat

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/screen"
)

// ScreenConfig is a handler's screen: the site's own code, asked about each
// post and edit before it is stored, which allows it, refuses it or
// replaces its text.
type ScreenConfig struct {
	// The URL each post and edit is POSTed to, as JSON, signed.
	URL string `json:"url"`
	// The key that signs each call, as Standard Webhooks writes it:
	// whsec_ and the base64 of 24 to 64 random bytes. Required.
	Secret string `json:"secret"`
	// How long a post waits for the screen's answer. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// What a failing screen (a timeout, a status other than 2xx, an
	// answer that is no verdict) does to the post: "refuse" it with 503,
	// or "allow" it unscreened. Default: refuse.
	OnError string `json:"on_error,omitempty"`
}

// The screen's on_error policies.
const (
	onErrorRefuse = "refuse"
	onErrorAllow  = "allow"
)

// hookScreen is the hook label of the screen's metrics.
const hookScreen = "screen"

// newScreen returns the screen of c, calling it with client; its calls are
// counted and its failures logged, with the URL and never the secret.
func (c *ScreenConfig) newScreen(client *hooks.Client, logger *zap.Logger) (*screen.Screen, error) {
	repl := caddy.NewReplacer()
	target, err := url.Parse(repl.ReplaceKnown(c.URL, ""))
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("screen: want an http:// or https:// URL, got %q", c.URL)
	}
	secret, err := hooks.ParseSecret(repl.ReplaceKnown(c.Secret, ""))
	if err != nil {
		return nil, fmt.Errorf("screen %s: %w; make one with: echo whsec_$(openssl rand -base64 32)", target.Redacted(), err)
	}
	onError := c.OnError
	if onError == "" {
		onError = onErrorRefuse
	}
	if onError != onErrorRefuse && onError != onErrorAllow {
		return nil, fmt.Errorf("screen: on_error %q; want %s or %s", c.OnError, onErrorRefuse, onErrorAllow)
	}
	where := target.Redacted()
	calls := hookCallsTotal.WithLabelValues(hookScreen, where)
	failures := hookFailuresTotal.WithLabelValues(hookScreen, where)
	latency := hookSeconds.WithLabelValues(hookScreen, where)
	return screen.New(client, screen.Config{
		Endpoint:     hooks.Endpoint{URL: target.String(), Secret: secret, Timeout: time.Duration(c.Timeout)},
		AllowOnError: onError == onErrorAllow,
		Observe: func(took time.Duration, err error) {
			if errors.Is(err, hooks.ErrClosed) {
				// The config stopped: no fault of the screen's.
				return
			}
			calls.Inc()
			latency.Observe(took.Seconds())
			if err != nil {
				failures.Inc()
				logger.Warn("message screen failed",
					zap.String("url", where), zap.String("on_error", onError),
					zap.Duration("took", took), zap.Error(err))
			}
		},
	}), nil
}

// unmarshalScreen reads the screen subdirective:
//
//	screen <url> {
//	    secret   <whsec_...>
//	    timeout  <duration>
//	    on_error refuse|allow
//	}
func unmarshalScreen(d *caddyfile.Dispenser) (*ScreenConfig, error) {
	url, err := hookURL(d, "screen")
	if err != nil {
		return nil, err
	}
	c := &ScreenConfig{URL: url}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		switch option {
		case "secret":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			c.Secret = d.Val()
		case "timeout":
			timeout, err := durationArg(d, "screen timeout")
			if err != nil {
				return nil, err
			}
			c.Timeout = timeout
		case "on_error":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			c.OnError = d.Val()
			if c.OnError != onErrorRefuse && c.OnError != onErrorAllow {
				return nil, d.Errf("screen on_error: want %s or %s, got %q", onErrorRefuse, onErrorAllow, c.OnError)
			}
		default:
			return nil, d.Errf("screen: unknown option %q", option)
		}
		if d.NextArg() {
			return nil, d.Errf("screen %s: unexpected argument %q", option, d.Val())
		}
	}
	if c.Secret == "" {
		return nil, d.Err("screen: a secret is required, so that the screen can tell calls from Caddy from anyone's")
	}
	return c, nil
}
