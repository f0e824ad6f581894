package hooks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// AnswerLimit is the most of an answer's headers, and of its body, that a
// hook reads: a receiver that sends more is failing, and reading it would
// let it cost Caddy memory.
const AnswerLimit = 64 << 10

// DefaultTimeout bounds a call whose Endpoint names no timeout.
const DefaultTimeout = 10 * time.Second

// The pool's bounds: a receiver that hangs can hold at most
// maxConnsPerHost connections, and calls beyond them wait for one (within
// their timeout) instead of opening more.
const (
	maxConnsPerHost     = 32
	maxIdleConnsPerHost = 8
	maxIdleConns        = 64
	idleConnTimeout     = 90 * time.Second
	dialTimeout         = 10 * time.Second
)

// Errors of Post.
var (
	ErrAnswerTooLarge = fmt.Errorf("answer larger than %d bytes", AnswerLimit)
	ErrClosed         = errors.New("hook client closed")
)

// StatusError is the error of a call answered with a status other than 2xx.
// A redirect is one too: a hook's URL is where it posts, never a hint.
type StatusError struct {
	Status int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("answered %d %s", e.Status, http.StatusText(e.Status))
}

// Endpoint is where a hook posts and how.
type Endpoint struct {
	// URL receives the POST. It appears in errors, its password
	// redacted; sign with Secret rather than put credentials in it.
	URL string
	// Secret signs each request; the zero Secret sends it unsigned.
	Secret Secret
	// Timeout bounds each call, from dialing to the answer's last byte;
	// 0 means DefaultTimeout.
	Timeout time.Duration
}

// Answer is what a receiver answered.
type Answer struct {
	Status int
	Header http.Header
	// Body is at most AnswerLimit bytes.
	Body []byte
}

// Client is the one outbound HTTP client that every hook of a config uses:
// one bounded connection pool, no redirects, answers capped at AnswerLimit.
// Close ends the calls in flight, so that a receiver that hangs never holds
// up a stop or a reload. Its methods are safe for concurrent use.
type Client struct {
	http      *http.Client
	transport *http.Transport
	stopped   context.Context
	stop      context.CancelFunc
	closeOnce sync.Once
}

// NewClient returns a client with its own connection pool.
func NewClient() *Client {
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxConnsPerHost:     maxConnsPerHost,
		MaxIdleConnsPerHost: maxIdleConnsPerHost,
		MaxIdleConns:        maxIdleConns,
		IdleConnTimeout:     idleConnTimeout,
		TLSHandshakeTimeout: dialTimeout,
		// The cap on answers holds for their headers too.
		MaxResponseHeaderBytes: AnswerLimit,
	}
	stopped, stop := context.WithCancel(context.Background())
	return &Client{
		http: &http.Client{
			Transport: transport,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		transport: transport,
		stopped:   stopped,
		stop:      stop,
	}
}

// Post sends body as JSON to e.URL, signed under id (which names this
// payload to the receiver: a retry of the same payload keeps its id). The
// error is non-nil unless the answer is 2xx; a *StatusError comes with the
// Answer, so that a caller can act on 410 or read a refusal's body. The call
// ends when ctx does, when e.Timeout passes, or when the client is closed.
func (c *Client) Post(ctx context.Context, e Endpoint, id string, body []byte) (Answer, error) {
	if id == "" || strings.Contains(id, ".") {
		// The signed content is id.timestamp.body: a dot in the id
		// would let two payloads share a signature.
		return Answer{}, fmt.Errorf("webhook id %q: want a non-empty id without dots", id)
	}
	if c.stopped.Err() != nil {
		return Answer{}, ErrClosed
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer context.AfterFunc(c.stopped, cancel)()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return Answer{}, fmt.Errorf("hook request: %w", err)
	}
	where := req.URL.Redacted() // for errors, which end up in logs
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-chat")
	if !e.Secret.IsZero() {
		e.Secret.SetHeaders(req.Header, id, time.Now(), body)
	} else {
		req.Header.Set(HeaderID, id)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if c.stopped.Err() != nil {
			return Answer{}, ErrClosed
		}
		return Answer{}, err
	}
	// Closing a body that was not read to its end closes the connection
	// too, so an answer that runs over the limit costs nothing more.
	defer resp.Body.Close()
	answer := Answer{Status: resp.StatusCode, Header: resp.Header}
	if resp.ContentLength > AnswerLimit {
		return answer, fmt.Errorf("%s: %w", where, ErrAnswerTooLarge)
	}
	answer.Body, err = io.ReadAll(io.LimitReader(resp.Body, AnswerLimit+1))
	if err != nil {
		return answer, fmt.Errorf("reading the answer of %s: %w", where, err)
	}
	if len(answer.Body) > AnswerLimit {
		answer.Body = nil
		return answer, fmt.Errorf("%s: %w", where, ErrAnswerTooLarge)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answer, fmt.Errorf("%s: %w", where, &StatusError{Status: resp.StatusCode})
	}
	return answer, nil
}

// Close ends every call in flight (each returns ErrClosed), refuses new ones
// and closes the idle connections.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.stop()
		c.transport.CloseIdleConnections()
	})
}

// NewID returns a fresh webhook id: msg_ and 16 random bytes, URL-safe.
func NewID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails: crypto/rand panics rather than return an error
	return "msg_" + base64.RawURLEncoding.EncodeToString(b[:])
}
