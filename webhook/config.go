// Package webhook delivers what happens in chat rooms to the site's own
// code: each webhook POSTs batches of events, signed as the Standard
// Webhooks specification says (package hooks), in each room's order, and
// retries with backoff until the receiver takes them.
//
// Messages, edits and deletes are entries of a room's log: a webhook keeps
// how far it delivered each room in the rooms' store (a position) and reads
// the log after it, so that a reload, or a restart with a durable store,
// resumes where delivery stopped, and a receiver that was down gets what it
// missed, as far as the history reaches. With a store that several nodes
// share, a lease per webhook and room has one live node deliver the room's
// events. Joins, leaves, bans and dropped rooms are not in the log: they
// wait in a bounded queue. It knows nothing of Caddy.
package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"time"

	"github.com/caddy-chat/caddy-chat/hooks"
)

// The types of events a webhook delivers.
const (
	EventMessage     = "message"
	EventEdit        = "edit"
	EventDelete      = "delete"
	EventBan         = "ban"
	EventJoin        = "join"
	EventLeave       = "leave"
	EventRoomCreated = "room_created"
	EventRoomDropped = "room_dropped"
)

// EventTypes are every type of event, in the order the docs list them.
var EventTypes = []string{EventMessage, EventEdit, EventDelete, EventBan, EventJoin, EventLeave, EventRoomCreated, EventRoomDropped}

// Defaults and bounds of a Config.
const (
	DefaultTimeout   = 5 * time.Second
	DefaultBatchSize = 100
	DefaultBatchWait = time.Second
	MaxBatchSize     = 1000
	MaxBatchWait     = time.Minute
	// DefaultRetryFor is how long a batch is retried before it is given
	// up and counted as dropped.
	DefaultRetryFor = 24 * time.Hour
	// DefaultBackoff is the wait before the first retry; each retry
	// doubles it, up to maxBackoff, with jitter.
	DefaultBackoff = time.Second
	maxBackoff     = 5 * time.Minute
)

// Config is one webhook.
type Config struct {
	// URL receives the batches: http or https.
	URL string
	// Secret signs each batch; the zero Secret sends them unsigned.
	Secret hooks.Secret
	// Events are the types delivered; empty means all of them.
	Events []string
	// Rooms are the patterns (path.Match) of the rooms whose events are
	// delivered; empty means every room.
	Rooms []string
	// Timeout bounds each POST; 0 means DefaultTimeout.
	Timeout time.Duration
	// BatchSize is the most events of one POST, and BatchWait how long
	// the first event of a batch waits for more; 0 means the defaults.
	BatchSize int
	BatchWait time.Duration
	// RetryFor is how long a batch is retried; Backoff the first wait
	// between tries. 0 means the defaults.
	RetryFor time.Duration
	Backoff  time.Duration
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchWait <= 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.RetryFor <= 0 {
		c.RetryFor = DefaultRetryFor
	}
	if c.Backoff <= 0 {
		c.Backoff = DefaultBackoff
	}
	return c
}

// Validate refuses a URL that is not http or https, unknown event types,
// malformed room patterns and batches out of bounds.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("webhook %q: %w", c.URL, err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("webhook %q: want an http:// or https:// URL", c.URL))
	case u.User != nil:
		errs = append(errs, fmt.Errorf("webhook %s: put no credentials in the URL; the secret signs each batch", u.Redacted()))
	}
	for _, e := range c.Events {
		if !slices.Contains(EventTypes, e) {
			errs = append(errs, fmt.Errorf("webhook %s: unknown event %q; want any of %v", c.URL, e, EventTypes))
		}
	}
	for _, p := range c.Rooms {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("webhook %s: room pattern %q: %w", c.URL, p, err))
		}
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("webhook %s: batch size %d: want 1 to %d", c.URL, c.BatchSize, MaxBatchSize))
	}
	if c.BatchWait < 0 || c.BatchWait > MaxBatchWait {
		errs = append(errs, fmt.Errorf("webhook %s: batch wait %v: want at most %v", c.URL, c.BatchWait, MaxBatchWait))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("webhook %s: the timeout must not be negative", c.URL))
	}
	return errors.Join(errs...)
}

// Equal reports whether c and o are the same webhook: the same URL, sent
// the same events in the same way.
func (c Config) Equal(o Config) bool {
	return c.URL == o.URL && c.Secret.Equal(o.Secret) &&
		slices.Equal(c.Events, o.Events) && slices.Equal(c.Rooms, o.Rooms) &&
		c.Timeout == o.Timeout && c.BatchSize == o.BatchSize && c.BatchWait == o.BatchWait &&
		c.RetryFor == o.RetryFor && c.Backoff == o.Backoff
}

// wants reports whether the webhook delivers events of type typ.
func (c Config) wants(typ string) bool {
	return len(c.Events) == 0 || slices.Contains(c.Events, typ)
}

// follows reports whether the webhook delivers the events of room.
func (c Config) follows(room string) bool {
	if len(c.Rooms) == 0 {
		return true
	}
	for _, p := range c.Rooms {
		if ok, _ := path.Match(p, room); ok {
			return true
		}
	}
	return false
}

// readsLog reports whether the webhook delivers any event read from the
// rooms' logs.
func (c Config) readsLog() bool {
	return c.wants(EventMessage) || c.wants(EventEdit) || c.wants(EventDelete) || c.wants(EventRoomCreated)
}

// name is what the webhook's positions and leases are kept under: its
// URL, hashed, so that a reload keeps them and another URL starts anew.
func (c Config) name() string {
	sum := sha256.Sum256([]byte(c.URL))
	return "webhook " + hex.EncodeToString(sum[:12])
}
