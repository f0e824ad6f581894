package chat

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/webhook"
)

// WebhookConfig is a webhook: where the events of the chat's rooms are
// POSTed, in signed batches (see docs/hooks.md).
type WebhookConfig struct {
	// The URL each batch is POSTed to: http or https.
	URL string `json:"url"`
	// The key that signs each batch, as Standard Webhooks writes it:
	// whsec_ and the base64 of 24 to 64 random bytes. Required.
	Secret string `json:"secret"`
	// The types of events sent: message, edit, delete, ban, join, leave,
	// room_created, room_dropped. Default: all of them.
	Events []string `json:"events,omitempty"`
	// Patterns of the rooms whose events are sent, such as support-*.
	// Default: every room; a handler's webhook, the handler's rooms.
	Rooms []string `json:"rooms,omitempty"`
	// How long a POST may take. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// The most events one POST carries. Default: 100.
	BatchSize int `json:"batch_size,omitempty"`
	// How long the first event of a batch waits for more. Default: 1s.
	BatchWait caddy.Duration `json:"batch_wait,omitempty"`
}

// hookWebhook is the hook label of the webhooks' metrics.
const hookWebhook = "webhook"

// config returns the webhook's delivery config, its placeholders
// replaced, or why it is wrong.
func (c *WebhookConfig) config() (webhook.Config, error) {
	repl := caddy.NewReplacer()
	cfg := webhook.Config{
		URL:       repl.ReplaceKnown(c.URL, ""),
		Events:    c.Events,
		Rooms:     c.Rooms,
		Timeout:   time.Duration(c.Timeout),
		BatchSize: c.BatchSize,
		BatchWait: time.Duration(c.BatchWait),
	}
	if err := cfg.Validate(); err != nil {
		return webhook.Config{}, err
	}
	secret, err := hooks.ParseSecret(repl.ReplaceKnown(c.Secret, ""))
	if err != nil {
		return webhook.Config{}, fmt.Errorf("webhook %s: %w; make one with: echo whsec_$(openssl rand -base64 32)", redacted(cfg.URL), err)
	}
	cfg.Secret = secret
	return cfg, nil
}

// redacted is a URL as logs and metrics show it.
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

// webhooks are a config's webhooks, the app's and its handlers': they
// start when the config does and stop with it, and hear of the rooms'
// events from the Manager's hooks.
type webhooks struct {
	logger *zap.Logger
	// sharedStore is set when other nodes share the rooms: a room one
	// node lets go idle lives on in the store.
	sharedStore bool

	mu      sync.Mutex
	configs []webhook.Config
	running []*webhook.Webhook
	stopped bool
}

// add has the config deliver cfg's events once it starts. A URL that a
// webhook of the config has already is that webhook: a handler mounted on
// two sites sends each event once. The same URL with other settings is
// refused: a webhook keeps how far it delivered each room under its URL,
// and two webhooks sharing those positions would each skip the other's
// events.
func (ws *webhooks) add(cfg webhook.Config) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	i := slices.IndexFunc(ws.configs, func(c webhook.Config) bool { return c.URL == cfg.URL })
	switch {
	case i < 0:
		ws.configs = append(ws.configs, cfg)
	case !ws.configs[i].Equal(cfg):
		return fmt.Errorf("webhook %s is configured twice with different settings (events, rooms, secret, timeout or batch): "+
			"its delivery positions are kept by URL; give each webhook its own URL, for example with a query string", redacted(cfg.URL))
	}
	return nil
}

// start starts every webhook, reading from m and posting with client. A
// webhook reads the store as it starts: the rooms' hooks, which wait for
// ws.mu under a room's lock, must not wait for that.
func (ws *webhooks) start(m *rooms.Manager, client *hooks.Client) {
	ws.mu.Lock()
	configs := ws.configs
	ws.configs = nil // started once
	ws.mu.Unlock()
	var started []*webhook.Webhook
	for _, cfg := range configs {
		started = append(started, webhook.Start(cfg, m, client, newWebhookStats(cfg.URL), ws.logger))
	}
	ws.mu.Lock()
	stopped := ws.stopped
	if !stopped {
		ws.running = started
	}
	ws.mu.Unlock()
	if stopped {
		for _, w := range started {
			w.Stop()
		}
	}
}

// stop stops every webhook: a POST in flight ends now, and the next
// config sends its batch's messages, edits and deletes again.
func (ws *webhooks) stop() {
	ws.mu.Lock()
	running := ws.running
	ws.running, ws.stopped = nil, true
	ws.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range running {
		wg.Go(w.Stop)
	}
	wg.Wait()
}

// each runs f on every running webhook. It is called with a room's lock
// held, and f only notes what happened.
func (ws *webhooks) each(f func(*webhook.Webhook)) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.running {
		f(w)
	}
}

// hooks returns the Manager's hooks that feed the webhooks, on top of
// base.
func (ws *webhooks) hooks(base rooms.Hooks) rooms.Hooks {
	published, dropped := base.Published, base.RoomDropped
	base.Published = func(room string, deliveries int) {
		published(room, deliveries)
		ws.each(func(w *webhook.Webhook) { w.Published(room) })
	}
	base.RoomDropped = func(room, reason string) {
		dropped(room, reason)
		// A room is gone with its log when deleted, or let go idle by
		// a node that keeps it alone; the others only leave this node.
		if reason == "deleted" || reason == "idle" && !ws.sharedStore {
			ws.each(func(w *webhook.Webhook) { w.RoomDropped(room, reason) })
		}
	}
	base.Presence = func(room string, change rooms.PresenceChange) {
		ws.each(func(w *webhook.Webhook) { w.Presence(room, change) })
	}
	base.Banned = func(b rooms.Ban) {
		ws.each(func(w *webhook.Webhook) { w.Banned(b) })
	}
	return base
}

// webhookStats counts a webhook's deliveries in the chat metrics.
type webhookStats struct {
	delivered, dropped, retried, calls, failures prometheus.Counter
	latency                                      prometheus.Observer
}

func newWebhookStats(rawURL string) *webhookStats {
	where := redacted(rawURL)
	return &webhookStats{
		delivered: webhookEventsTotal.WithLabelValues(where, "delivered"),
		dropped:   webhookEventsTotal.WithLabelValues(where, "dropped"),
		retried:   webhookRetriesTotal.WithLabelValues(where),
		calls:     hookCallsTotal.WithLabelValues(hookWebhook, where),
		failures:  hookFailuresTotal.WithLabelValues(hookWebhook, where),
		latency:   hookSeconds.WithLabelValues(hookWebhook, where),
	}
}

func (s *webhookStats) Delivered(events int, latency time.Duration) {
	s.calls.Inc()
	s.latency.Observe(latency.Seconds())
	s.delivered.Add(float64(events))
}

func (s *webhookStats) Failed() {
	s.calls.Inc()
	s.failures.Inc()
}

func (s *webhookStats) Retried()           { s.retried.Inc() }
func (s *webhookStats) Dropped(events int) { s.dropped.Add(float64(events)) }

// unmarshalWebhook reads the webhook option, of the global option or of
// the directive:
//
//	webhook <url> {
//	    secret  <whsec_...>
//	    events  <type...>
//	    rooms   <pattern...>
//	    timeout <duration>
//	    batch   <size> [<wait>]
//	}
func unmarshalWebhook(d *caddyfile.Dispenser) (*WebhookConfig, error) {
	url, err := hookURL(d, "webhook")
	if err != nil {
		return nil, err
	}
	c := &WebhookConfig{URL: url}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		switch option {
		case "secret":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			c.Secret = d.Val()
		case "events", "rooms":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			if option == "events" {
				c.Events = append(c.Events, args...)
			} else {
				c.Rooms = append(c.Rooms, args...)
			}
		case "timeout":
			timeout, err := durationArg(d, "webhook timeout")
			if err != nil {
				return nil, err
			}
			c.Timeout = timeout
		case "batch":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 || n > webhook.MaxBatchSize {
				return nil, d.Errf("webhook batch: want 1 to %d events, got %q", webhook.MaxBatchSize, d.Val())
			}
			c.BatchSize = n
			if d.NextArg() {
				d.Prev()
				wait, err := durationArg(d, "webhook batch")
				if err != nil {
					return nil, err
				}
				c.BatchWait = wait
			}
		default:
			return nil, d.Errf("webhook: unknown option %q", option)
		}
		if d.NextArg() {
			return nil, d.Errf("webhook %s: unexpected argument %q", option, d.Val())
		}
	}
	if c.Secret == "" {
		return nil, d.Err("webhook: a secret is required, so that the receiver can tell batches from Caddy from anyone's")
	}
	for _, e := range c.Events {
		if !slices.Contains(webhook.EventTypes, e) {
			return nil, d.Errf("webhook events: unknown event %q; want any of %s", e, strings.Join(webhook.EventTypes, " "))
		}
	}
	// The URL and the secret may hold placeholders: they are checked
	// once these are known, as the config loads.
	return c, nil
}

// hookURL reads the URL of a hook's subdirective, screen or webhook, which
// is its only argument.
func hookURL(d *caddyfile.Dispenser, directive string) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	url := d.Val()
	if d.NextArg() {
		return "", d.Errf("%s: unexpected argument %q after the URL", directive, d.Val())
	}
	return url, nil
}
