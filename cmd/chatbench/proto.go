package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/sse"
)

// A protocol is how subscribers follow their rooms. Each names the protocol
// its streams must report, so that a run that silently fell back to another
// one (no ALPN h2, no HTTP/3 listener) fails instead of measuring it.
var protocols = map[string]string{
	"h1":   "HTTP/1.1",
	"h2":   "HTTP/2.0",
	"h3":   "HTTP/3.0",
	"grpc": "grpc/h2",
	"quic": "QUIC/" + idleALPN,
}

// idleALPN is the protocol of -proto quic, bare QUIC connections that carry
// nothing, against chatbaseline -proto quic: the memory floor of quic-go.
const idleALPN = "chat-idle"

// publishProtocol is the protocol the publisher must use under each -proto.
// gRPC subscribers are fed by the same HTTP/2 publisher as SSE ones, so
// that the two carry the same load.
func publishProtocol(proto string) string {
	if proto == "grpc" {
		return protocols["h2"]
	}
	return protocols[proto]
}

// opener opens one subscriber's stream, resuming after lastID.
type opener interface {
	// open returns the stream and the protocol it actually uses.
	open(ctx context.Context, lastID string) (events, string, error)
}

// events is an open stream of a room's messages.
type events interface {
	// next returns the id of the next message, or of the next delete
	// (deleted), and, while measuring, the time its publisher put in the
	// message or sent the delete (0 if none).
	next() (id string, sent int64, deleted bool, err error)
	close()
}

// clients makes the connections of a run: one per subscriber, as separate
// browsers have, except over HTTP/1.1, where a stream holds its connection
// anyway, and the publisher's. Subscribers' connections come from
// 127.0.0.2, 127.0.0.3, ..., perSource each: past about 28,000 a source
// address runs out of ports, for TCP and UDP alike.
type clients struct {
	proto     string
	base      *url.URL
	perSource int

	mu      sync.Mutex
	h1      map[int]*http.Client // shared per source address
	closers []func()
}

func newClients(proto string, base *url.URL, perSource int) (*clients, error) {
	if _, ok := protocols[proto]; !ok {
		return nil, fmt.Errorf("-proto %q: want h1, h2, h3, grpc or quic", proto)
	}
	if proto != "h1" && base.Scheme != "https" {
		return nil, fmt.Errorf("-proto %s needs an https -url", proto)
	}
	if proto == "grpc" && strings.Trim(base.Path, "/") != "" {
		return nil, fmt.Errorf("-proto grpc calls /chat.v1.ChatService/Stream at the host's root; -url has the path %q", base.Path)
	}
	return &clients{proto: proto, base: base, perSource: max(perSource, 1), h1: map[int]*http.Client{}}, nil
}

// insecureTLS accepts any certificate: the servers measured use `tls
// internal` or a self-signed one.
func insecureTLS(alpn ...string) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: alpn}
}

func (c *clients) source(i int) net.IP {
	s := i / c.perSource
	return net.IPv4(127, 0, byte(s/250), byte(2+s%250))
}

// subscriber returns the opener of subscriber i, following room on the
// server at base.
func (c *clients) subscriber(i int, base *url.URL, room string) opener {
	streamURL := base.String() + "/stream/" + room
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: c.source(i)}}
	switch c.proto {
	case "h2":
		return httpOpener{streamURL, c.h2(dialer)}
	case "h3":
		return httpOpener{streamURL, c.h3(c.source(i))}
	case "grpc":
		return c.grpc(dialer, base, room)
	case "quic":
		return &quicOpener{dial: c.quicDialer(c.source(i)), addr: base.Host}
	}
	s := i / c.perSource
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h1[s] == nil {
		c.h1[s] = &http.Client{Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			DisableCompression:  true,
			MaxIdleConnsPerHost: -1,
			TLSClientConfig:     insecureTLS(),
		}}
	}
	return httpOpener{streamURL, c.h1[s]}
}

// publisher returns the client that posts the messages: one shared client
// over the protocol measured, from 127.0.0.1.
func (c *clients) publisher() *http.Client {
	var client *http.Client
	switch c.proto {
	case "h2", "grpc":
		client = c.h2(&net.Dialer{})
	case "h3":
		client = c.h3(nil)
	default:
		client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true, TLSClientConfig: insecureTLS()}}
	}
	client.Timeout = 10 * time.Second
	return client
}

// close closes every connection made.
func (c *clients) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.closers {
		f()
	}
	for _, h1 := range c.h1 {
		h1.CloseIdleConnections()
	}
}

func (c *clients) onClose(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closers = append(c.closers, f)
}

// h2 returns a client with a transport, so a connection, of its own that
// speaks HTTP/2 over TLS only.
func (c *clients) h2(dialer *net.Dialer) *http.Client {
	tr := &http.Transport{
		DialContext:        dialer.DialContext,
		TLSClientConfig:    insecureTLS(),
		DisableCompression: true,
		Protocols:          new(http.Protocols),
	}
	tr.Protocols.SetHTTP2(true)
	c.onClose(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h3 returns a client with a QUIC connection of its own, from source (any
// address if nil).
func (c *clients) h3(source net.IP) *http.Client {
	rt := &http3.Transport{
		TLSClientConfig:    insecureTLS(),
		DisableCompression: true,
		QUICConfig:         quicConfig(),
		Dial:               c.quicDialer(source),
	}
	c.onClose(func() { rt.Close() })
	return &http.Client{Transport: rt}
}

// quicConfig keeps connections alive: an idle stream carries nothing for as
// long as the server sends no heartbeat, and browsers keep such connections.
func quicConfig() *quic.Config {
	return &quic.Config{KeepAlivePeriod: 10 * time.Second}
}

// quicDialer dials QUIC connections from a UDP socket of its own, bound to
// source (any address if nil), made on the first dial.
func (c *clients) quicDialer(source net.IP) func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error) {
	var (
		mu  sync.Mutex
		udp *net.UDPConn
		qt  *quic.Transport
	)
	c.onClose(func() {
		mu.Lock()
		defer mu.Unlock()
		if qt != nil {
			qt.Close()
			udp.Close()
		}
	})
	return func(ctx context.Context, addr string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if qt == nil {
			if udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: source}); err != nil {
				return nil, fmt.Errorf("opening a UDP socket on %v: %w", source, err)
			}
			qt = &quic.Transport{Conn: udp}
		}
		conn, err := qt.DialEarly(ctx, raddr, tlsConf, conf)
		if err != nil {
			// The next attempt starts afresh, from another port.
			qt.Close()
			udp.Close()
			qt = nil
		}
		return conn, err
	}
}

// grpc returns the opener of a gRPC stream over a TLS connection of its
// own, negotiated as h2 by ALPN.
func (c *clients) grpc(dialer *net.Dialer, base *url.URL, room string) opener {
	conn, err := grpc.NewClient("passthrough:///"+base.Host,
		grpc.WithTransportCredentials(credentials.NewTLS(insecureTLS("h2"))),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		// NewClient fails only on a malformed target or option, which
		// newClients has ruled out.
		panic(fmt.Sprintf("grpc.NewClient: %v", err))
	}
	c.onClose(func() { conn.Close() })
	return grpcOpener{conn, room}
}

// httpOpener opens event streams with GET, as EventSource does.
type httpOpener struct {
	url    string
	client *http.Client
}

func (o httpOpener) open(ctx context.Context, lastID string) (events, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", o.url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, resp.Proto, fmt.Errorf("GET %s: %s", o.url, resp.Status)
	}
	return sseEvents{sse.NewReader(resp.Body), resp.Body}, resp.Proto, nil
}

type sseEvents struct {
	r    *sse.Reader
	body io.Closer
}

func (e sseEvents) next() (string, int64, bool, error) {
	for {
		ev, err := e.r.Next()
		if err != nil {
			return "", 0, false, err
		}
		switch ev.Name {
		case "message":
			var sent int64
			if measuring.Load() {
				sent, _ = sentAt(ev.Data)
			}
			return ev.ID, sent, false, nil
		case "delete":
			return ev.ID, deleteSentAt(deleteTarget(ev.Data)), true, nil
		}
	}
}

func (e sseEvents) close() { e.body.Close() }

// grpcOpener opens chat.v1.ChatService/Stream calls on one connection.
type grpcOpener struct {
	conn *grpc.ClientConn
	room string
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true}

func (o grpcOpener) open(ctx context.Context, lastID string) (events, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := o.conn.NewStream(ctx, streamDesc, "/chat.v1.ChatService/Stream")
	if err == nil {
		err = st.SendMsg(&chatv1.StreamRequest{Room: o.room, LastEventId: lastID})
	}
	if err == nil {
		err = st.CloseSend()
	}
	if err == nil {
		_, err = st.Header() // the stream is open
	}
	if err != nil {
		cancel()
		return nil, "", err
	}
	proto := "grpc"
	if p, ok := peer.FromContext(st.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			proto += "/" + info.State.NegotiatedProtocol
		}
	}
	return &grpcEvents{st: st, cancel: cancel}, proto, nil
}

type grpcEvents struct {
	st     grpc.ClientStream
	cancel context.CancelFunc
	ev     chatv1.StreamEvent
}

func (e *grpcEvents) next() (string, int64, bool, error) {
	for {
		if err := e.st.RecvMsg(&e.ev); err != nil {
			return "", 0, false, err
		}
		if d := e.ev.GetDelete(); d != nil {
			return d.GetId(), deleteSentAt(d.GetTarget()), true, nil
		}
		m := e.ev.GetMessage()
		if m == nil {
			continue // a reset, an edit, presence or the room's close
		}
		var sent int64
		if measuring.Load() {
			sent, _ = stamp(m.GetMessage())
		}
		return m.GetId(), sent, false, nil
	}
}

func (e *grpcEvents) close() { e.cancel() }

// quicOpener holds a bare QUIC connection, which carries nothing.
type quicOpener struct {
	dial func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error)
	addr string
}

func (o *quicOpener) open(ctx context.Context, _ string) (events, string, error) {
	conn, err := o.dial(ctx, o.addr, insecureTLS(idleALPN), quicConfig())
	if err != nil {
		return nil, "", err
	}
	return idleEvents{ctx, conn}, "QUIC/" + conn.ConnectionState().TLS.NegotiatedProtocol, nil
}

// idleEvents waits for its connection's end: no message ever comes.
type idleEvents struct {
	ctx  context.Context
	conn *quic.Conn
}

func (e idleEvents) next() (string, int64, bool, error) {
	select {
	case <-e.ctx.Done():
		return "", 0, false, e.ctx.Err()
	case <-e.conn.Context().Done():
		return "", 0, false, context.Cause(e.conn.Context())
	}
}

func (e idleEvents) close() { e.conn.CloseWithError(0, "") }

// tally counts what protocol each stream (or post) used.
type tally struct {
	mu sync.Mutex
	n  map[string]int64
}

func (t *tally) add(proto string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int64{}
	}
	t.n[proto]++
}

func (t *tally) counts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.n)
}

// only fails if anything used another protocol than want.
func (t *tally) only(what, want string) error {
	counts := t.counts()
	var other []string
	for _, proto := range slices.Sorted(maps.Keys(counts)) {
		if proto != want {
			other = append(other, fmt.Sprintf("%d over %s", counts[proto], proto))
		}
	}
	if len(other) > 0 {
		return fmt.Errorf("%s went over another protocol than %s: %s", what, want, strings.Join(other, ", "))
	}
	return nil
}

func formatCounts(counts map[string]int64) string {
	var parts []string
	for _, proto := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d x %s", counts[proto], proto))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
