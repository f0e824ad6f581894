package chat

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/broadcast"
	"github.com/caddy-chat/caddy-chat/relay"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
	"github.com/caddy-chat/caddy-chat/sse"
)

// writeTimeout bounds one write to a stream. A client that stops reading
// fills its TCP window, and its stream would otherwise block forever: past
// eviction, past the stopping event, and with it Caddy's shutdown.
const writeTimeout = 10 * time.Second

// The retry hint sent to each client is drawn from this range, in
// milliseconds: a stream ended by a reload, a stop or an eviction resumes
// after it, and spreading it spreads the reconnections of a whole crowd.
const (
	minReconnectDelay = 1000
	maxReconnectDelay = 3000
)

// serveStream sends the room's events: the replay the client asked for,
// then live messages, until the client leaves, the room closes, the
// subscriber is evicted or the config stops.
//
// An HTTP/1 stream leaves the request path once its response has begun: the
// handler takes the connection over and hands it to the app's relay, which
// writes to it from a few shared goroutines. That frees the request goroutine
// and net/http's buffers, most of what an idle stream costs. HTTP/2 and
// HTTP/3 streams stay in the request path (see streamInPath).
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, c service.Caller, room string) error {
	if err := h.svc.CheckRoom(room); err != nil {
		return err
	}
	req, err := streamRequest(r, room)
	if err != nil {
		return err
	}
	if r.ProtoMajor == 1 {
		if hj, ok := innermost(w).(http.Hijacker); ok {
			return h.relayStream(w, r, hj, c, req)
		}
	}
	return h.streamInPath(w, r, c, req)
}

// streamRequest reads where a stream starts and who it is from the
// request. It is a frame of its own so that its locals are off the stack
// before the stream parks (see streamInPath).
func streamRequest(r *http.Request, room string) (*service.StreamRequest, error) {
	req := &service.StreamRequest{Room: room, LastEventID: r.Header.Get("Last-Event-ID")}
	q := r.URL.Query()
	if req.LastEventID == "" {
		req.LastEventID = q.Get("last_event_id")
	}
	if s := q.Get("history"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, badRequest("history must be a whole number, 0 or more")
		}
		req.History = n
	}
	switch q.Get("presence") {
	case "", "0":
	case "1":
		req.Presence = true
	default:
		return nil, badRequest("presence must be 1 or 0")
	}
	req.User = q.Get("user")
	return req, nil
}

// sseWire writes a stream as Server-Sent Events through sw, to w: the head,
// then a retry hint and the start events in one write.
func sseWire(w http.ResponseWriter, sw *streamWriter) *streamWire {
	return &streamWire{
		sw: sw,
		start: func(events []*rooms.Event) error {
			hdr := w.Header()
			hdr.Set("Content-Type", "text/event-stream")
			// no-transform keeps encode, and any proxy that honours it,
			// from compressing the stream, which would hold events back
			// in its buffers.
			hdr.Set("Cache-Control", "no-cache, no-transform")
			hdr.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
			return sw.send(streamStart(events))
		},
		write: sw.writeEvents,
		ping:  sw.ping,
	}
}

// streamInPath writes a stream from the request's goroutine, which parks
// in streamLoop for the life of the stream, under about 5 KB of frames of
// Caddy's handler chain (6.2 KB in use in all over HTTP/2, 6.8 KB over
// HTTP/3). Its stack stays at 8 KiB only while no call made from it ever
// needs more than about 7.2 KB: one that does doubles it to 16 KiB, and the
// runtime never halves it back, since it shrinks a stack only while less
// than a quarter of it is in use. A write through Caddy's wrappers and
// x/net/http2's hand-off to the connection's goroutine needs 1.4 to 1.6 KB
// more, and so, now and then, does an allocation that refills the
// allocator's cache. So what an idle stream does, its start, its wake-ups
// and its heartbeats, runs aside (see aside), and only a stream that
// messages reach grows to 16 KiB.
func (h *Handler) streamInPath(w http.ResponseWriter, r *http.Request, c service.Caller, req *service.StreamRequest) error {
	wake := broadcast.NewSignal()
	var s *streamSession
	if err := aside(func() (err error) {
		s, err = h.startStream(c, *req, wake.Wake, sseWire(w, newStreamWriter(w)))
		if s != nil {
			s.entry = h.pastWrappers(r, s.wire.sw, req.Room)
		}
		return err
	}); s == nil {
		if errors.Is(err, errReplayCut) {
			return nil
		}
		return err
	}
	s.live(h, r, wake)
	return nil
}

// aside runs f on a new goroutine and waits for it, so that the calls under
// f, however deep, do not grow the caller's stack (see streamInPath). A
// panic in f is raised again in the caller, where net/http recovers it,
// with the stack where it happened, which the caller's would not show;
// http.ErrAbortHandler is raised as it is, for net/http to recognise. It
// costs about a microsecond, once per stream start and per heartbeat, never
// per message.
func aside(f func() error) error {
	type result struct {
		err      error
		panicked any
	}
	done := make(chan result, 1)
	go func() {
		returned := false
		defer func() {
			if returned {
				return
			}
			p := recover()
			switch {
			case p == nil:
				p = errors.New("runtime.Goexit under a stream's call aside")
			case p != http.ErrAbortHandler:
				p = fmt.Sprintf("%v\n\npanicked aside, at:\n%s", p, debug.Stack())
			}
			done <- result{panicked: p}
		}()
		err := f()
		returned = true
		done <- result{err: err}
	}()
	res := <-done
	if res.panicked != nil {
		panic(res.panicked)
	}
	return res.err
}

// pastWrappers sends the rest of a stream whose head is out past Caddy's
// wrappers where it can (see streamWriter.bypass), and returns the stream's
// access-log entry: the wrappers see no more of the body, so Caddy's own
// would have it short. Where the stream stays behind the wrappers, Caddy's
// own entry is right, and the returned one is nil.
func (h *Handler) pastWrappers(r *http.Request, sw *streamWriter, room string) *accessEntry {
	if !sw.bypass() {
		return nil
	}
	return h.newAccessEntry(r, sw.w, room)
}

// streamLoop writes a stream's live events in the request path, SSE or
// gRPC, through wire, and returns why it ended. The goroutine waits on wake
// alone, which new events, the heartbeat, the client leaving and the config
// stopping all make ready: a receive on one channel costs a delivery less
// than a select over four.
func (h *Handler) streamLoop(r *http.Request, sub *rooms.Subscription, wake broadcast.Signal, wire *streamWire) error {
	write, ping := wire.write, wire.ping
	gone, stopping := r.Context().Done(), h.app.Stopping()
	// Registering the wake-ups allocates, which is deep enough now and then
	// to grow this goroutine's stack (see streamInPath): it runs aside.
	var wakes *streamWakes
	_ = aside(func() error {
		wakes = h.newStreamWakes(r, wake)
		return nil
	})
	defer wakes.stop()
	beat := &wire.sw.beat // set by the app's sweeper
	var events []*rooms.Event
	for {
		<-wake
		// Two polls, each a lock-free check of an open channel, where one
		// select would lock both.
		select {
		case <-gone:
			return relay.ErrClientLeft
		default:
		}
		select {
		case <-stopping:
			return errStopped
		default:
		}
		// One write and one flush however many messages arrived meanwhile,
		// none when nothing had.
		var err error
		events, err = sub.Take(events[:0])
		wrote := len(events) > 0
		if wrote {
			if werr := write(events); werr != nil {
				err = werr
			}
		}
		clear(events) // drop references to shared events while idle
		if cap(events) > maxKeptEvents {
			events = nil // a burst is over; do not keep its memory
		}
		// A heartbeat is due only on a stream idle for its interval: one
		// written meanwhile needs none.
		if beat.Swap(false) && err == nil && !wrote {
			err = ping()
		}
		if err != nil {
			if r.Context().Err() != nil {
				return relay.ErrClientLeft
			}
			return err
		}
	}
}

// streamWakes is what makes a stream loop's wake signal ready besides new
// events and the heartbeat (the app's sweeper): the client leaving and the
// config stopping.
type streamWakes struct {
	unregister [2]func() bool
}

// newStreamWakes has wake woken when the request ends and when the config
// stops.
func (h *Handler) newStreamWakes(r *http.Request, wake broadcast.Signal) *streamWakes {
	return &streamWakes{unregister: [2]func() bool{
		context.AfterFunc(r.Context(), wake.Wake),
		context.AfterFunc(h.app.stopCtx, wake.Wake),
	}}
}

// stop unregisters the wake-ups.
func (w *streamWakes) stop() {
	for _, unregister := range w.unregister {
		unregister()
	}
}

// relayStream begins the response through w, so that it passes through every
// handler wrapping this one (header rules, encode, logs and metrics see its
// status and head), then takes the connection over and hands it to the relay.
// net/http sends a body with Transfer-Encoding identity unchunked and ends it
// by closing the connection, which is how the relay ends a stream.
//
// The connection is taken from the innermost writer, net/http's own, not
// through the wrappers: a wrapper's hijacked connection may count what is
// written to it, which the relay would go on doing after ServeHTTP has
// returned and the wrapper's owner has read the count. Caddy's access log
// skips the request for the same reason; the stream writes its entry when it
// ends (see accessEntry).
//
// A replay cut at the byte cap ends the stream once written, without a
// takeover: the client comes back after its last message for the rest.
func (h *Handler) relayStream(w http.ResponseWriter, r *http.Request, hj http.Hijacker, c service.Caller, req *service.StreamRequest) error {
	relayed := h.app.relay.NewStream()
	wire := sseWire(w, newStreamWriter(w))
	start := wire.start
	wire.start = func(events []*rooms.Event) error {
		// On the head of an open stream only: a refusal is an answer
		// like any other.
		w.Header().Set("Transfer-Encoding", "identity")
		return start(events)
	}
	s, err := h.startStream(c, *req, relayed.Wake, wire)
	if s == nil {
		if errors.Is(err, errReplayCut) {
			return nil
		}
		return err
	}
	// From here on the relay writes the stream and ends it on stop: the
	// session lets go of its writer, and with it of net/http's response
	// and its buffers, which would otherwise stay as long as the stream.
	s.unwatch()
	started := s.wire.sw.written
	s.wire, s.unwatch = nil, func() {}
	conn, _, err := hj.Hijack()
	if err != nil {
		// The response has begun: it ends here, and the client reconnects.
		s.end(err, started)
		h.logger.Error("taking a stream's connection over", zap.String("room", req.Room), zap.Error(err))
		return nil
	}
	s.entry = h.newAccessEntry(r, w, req.Room)
	relayed.Attach(conn, &sseSource{sub: s.stream.Subscription}, func(ended relay.Ended) {
		s.end(ended.Err, started+ended.Written)
	})
	return nil
}

// innermost returns the writer at the bottom of w's chain of wrappers.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// endReason names why a stream ended, for its access-log entry.
func endReason(err error) string {
	switch {
	case errors.Is(err, relay.ErrClientLeft):
		return "client_left"
	case errors.Is(err, relay.ErrPoolClosed), errors.Is(err, rooms.ErrClosed), errors.Is(err, errStopped):
		return "stopping"
	case errors.Is(err, rooms.ErrEvicted):
		return "evicted"
	case errors.Is(err, rooms.ErrRoomClosed):
		return "room_deleted"
	case errors.Is(err, rooms.ErrExpired):
		return "token_expired"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "write_timeout"
	}
	return "write_error"
}

// sseCodec writes the rooms' events as event-stream frames: each frame is
// made once, by the first stream to write it, and shared by all.
var sseCodec = rooms.NewCodec(func(e *rooms.Event) []byte {
	var id string
	switch e.Kind {
	case rooms.EventMessage, rooms.EventEdit, rooms.EventDelete:
		// An action's id is a position in the room's sequence too.
		id = e.Message.ID
	}
	return sse.AppendEvent(nil, sse.Event{ID: id, Name: e.Kind.String(), Data: e.JSON()})
})

// encodeAside makes, on a goroutine aside, the encodings in c of events
// that no stream has made yet: an encoding (JSON, protobuf) runs deep, and
// made on a stream's own goroutine it would double that goroutine's stack
// for the stream's life (see streamInPath). It costs one goroutine per
// event's first stream, not per delivery.
func encodeAside[T any](c *rooms.Codec[T], events []*rooms.Event) {
	for _, e := range events {
		if !c.Made(e) {
			_ = aside(func() error {
				for _, e := range events {
					c.Encode(e)
				}
				return nil
			})
			return
		}
	}
}

// pingFrame is the heartbeat of an SSE stream.
var pingFrame = sse.AppendComment(nil, "ping")

// streamStart is what an SSE stream begins with: its retry hint, then the
// subscription's start (a reset event when the resume position was lost,
// then the replay).
func streamStart(events []*rooms.Event) []byte {
	buf := sse.AppendRetry(nil, minReconnectDelay+rand.IntN(maxReconnectDelay-minReconnectDelay+1))
	for _, e := range events {
		buf = append(buf, sseCodec.Encode(e)...)
	}
	return buf
}

// maxKeptEvents is the largest buffer of events a relayed stream keeps for
// its next take.
const maxKeptEvents = 64

// sseSource is what the relay writes of a subscription: its events as
// event-stream frames.
type sseSource struct {
	sub    *rooms.Subscription
	events []*rooms.Event // reused by each Take
}

// Take appends the frames to write to dst; a non-nil error ends the stream
// after them.
func (s *sseSource) Take(dst [][]byte) ([][]byte, error) {
	events, err := s.sub.Take(s.events[:0])
	for _, e := range events {
		dst = append(dst, sseCodec.Encode(e))
	}
	clear(events) // drop references to shared events while idle
	s.events = events[:0]
	if cap(s.events) > maxKeptEvents {
		s.events = nil // a burst is over; do not keep its memory
	}
	return dst, err
}

// streamWriter writes a stream in the request path. A write that takes
// longer than the write timeout fails, and so does one under way when the
// config stops, instead of holding the stop for the whole timeout.
//
// No deadline is left on the connection between writes: over HTTP/2 a
// deadline set resets the stream when it passes, idle or not, and setting or
// clearing one is a message to the connection's goroutine. The app's sweeper
// sets a deadline only to fail a write: a write stores when it began, which
// the sweeper reads, and arms nothing (a watchdog timer reset per write was
// 2% of the server's CPU over HTTP/2; one per stream, not reset, still fired
// 1,500 times a second at 15,000 streams).
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// conn is the innermost writer, the connection's own, whose deadline
	// may be set from another goroutine; the wrappers' may not.
	conn    *http.ResponseController
	inner   http.ResponseWriter
	written int64 // bytes of the body written through sw
	held    bool  // Flush waits for the end of the write under way

	// What the sweeper reads without a lock, on streamClock: when the
	// last write began, and when the one under way began, 0 between
	// writes. A write stores them under mu, which orders it against fail.
	lastWrite  atomic.Int64
	writeStart atomic.Int64
	beat       atomic.Bool // the sweeper found the stream idle for a heartbeat interval
	failing    atomic.Bool // the sweeper is failing the write under way
	swept      int         // index in its sweeper's streams (one at most), under its lock; -1: none
	wake       func()      // wakes the stream's loop for a heartbeat; nil: none

	mu       sync.Mutex // orders failing a write against its start and end
	stopped  bool
	timedOut bool
}

// errStopped fails the writes of a stream whose config has stopped.
var errStopped = errors.New("the config stopped")

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	inner := innermost(w)
	return &streamWriter{w: w, rc: http.NewResponseController(w), inner: inner, conn: http.NewResponseController(inner), swept: -1}
}

// bypass makes the rest of the body go to the connection's own writer, past
// the wrappers, once the head and the stream's start have gone through them:
// over HTTP/2 and HTTP/3 Caddy's write idle timeout would otherwise arm and
// clear a deadline around each write and flush, a message to the
// connection's goroutine each. It does not when a wrapper encodes the body,
// and reports whether it did.
func (sw *streamWriter) bypass() bool {
	if sw.inner == sw.w || sw.w.Header().Get("Content-Encoding") != "" {
		return false
	}
	sw.w, sw.rc = sw.inner, sw.conn
	return true
}

// within runs write, failing it past the write timeout. Once the config has
// stopped it refuses to start a write.
func (sw *streamWriter) within(write func() error) error {
	sw.mu.Lock()
	if sw.stopped {
		sw.mu.Unlock()
		return errStopped
	}
	start := streamClock()
	sw.lastWrite.Store(start)
	sw.writeStart.Store(start)
	sw.mu.Unlock()
	err := write()
	sw.mu.Lock()
	sw.writeStart.Store(0)
	switch {
	case err == nil:
	case sw.timedOut:
		err = fmt.Errorf("writing a stream: %w", os.ErrDeadlineExceeded)
	case sw.stopped:
		err = errStopped
	}
	sw.mu.Unlock()
	return err
}

// fail fails the write under way, if any, by a deadline in the past on the
// connection, which over HTTP/2 resets the stream; with timedOut, only a
// write that has taken the write timeout. A wrapper (Caddy's write idle
// timeout) re-arms the deadline between the chunks of a write: it goes on
// failing the write until the write returns. It touches the connection
// only while a write is under way, so never after the handler is done.
func (sw *streamWriter) fail(timedOut bool) {
	for {
		sw.mu.Lock()
		// A sweep that found one write overdue as it ended leaves the
		// next alone.
		start := sw.writeStart.Load()
		writing := start != 0 && (!timedOut || streamClock()-start >= int64(writeTimeout))
		if writing {
			sw.timedOut = sw.timedOut || timedOut
			_ = sw.conn.SetWriteDeadline(time.Now())
		}
		sw.mu.Unlock()
		if !writing {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watch has s fail the stream's writes past the write timeout and, with
// wake, wake the stream's loop with its beat set once it has been idle for
// a heartbeat interval. Once ctx is done, it fails the write under way and
// refuses later ones; it leaves an idle stream alone, and the handler ends
// it on stop with what its protocol says. The returned function stops
// watching: the stream's writes are over.
func (sw *streamWriter) watch(ctx context.Context, s *sweeper, wake func()) (unwatch func()) {
	sw.wake = wake
	sw.lastWrite.Store(streamClock())
	s.add(sw)
	stop := context.AfterFunc(ctx, func() {
		sw.mu.Lock()
		sw.stopped = true
		sw.mu.Unlock()
		sw.fail(false)
	})
	return func() {
		stop()
		s.remove(sw)
	}
}

// writeEvents writes events as an SSE stream's frames and flushes once.
func (sw *streamWriter) writeEvents(events []*rooms.Event) error {
	encodeAside(sseCodec, events)
	return sw.flushed(func() error {
		for _, e := range events {
			if _, err := sw.Write(sseCodec.Encode(e)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ping sends a heartbeat, aside: a stream pinged is one that was idle.
func (sw *streamWriter) ping() error {
	return aside(func() error { return sw.send(pingFrame) })
}

// send writes b and flushes it, within the write timeout.
func (sw *streamWriter) send(b []byte) error {
	return sw.flushed(func() error {
		_, err := sw.Write(b)
		return err
	})
}

// flushed runs write within the write timeout and flushes once after it:
// a flush asked for meanwhile, as connect asks after each message it
// sends, waits for that one.
func (sw *streamWriter) flushed(write func() error) error {
	return sw.within(func() error {
		sw.held = true
		err := write()
		sw.held = false
		if err != nil {
			return err
		}
		return sw.rc.Flush()
	})
}

// Header, Write, WriteHeader and Flush make sw the http.ResponseWriter that
// connect writes a call's response to, so that a gRPC stream's writes go
// where sw's do, past the wrappers once bypass has been called.
func (sw *streamWriter) Header() http.Header { return sw.w.Header() }

// Write writes to the body and counts what it wrote.
func (sw *streamWriter) Write(b []byte) (int, error) {
	n, err := sw.w.Write(b)
	sw.written += int64(n)
	return n, err
}

// WriteHeader sends the response's head.
func (sw *streamWriter) WriteHeader(status int) { sw.w.WriteHeader(status) }

// Flush flushes the body, unless sw is in the middle of a write that flushes
// once at its end. It gives connect, which asks for an http.Flusher, the
// flush that Caddy's wrappers offer only through an http.ResponseController.
func (sw *streamWriter) Flush() {
	if !sw.held {
		_ = sw.rc.Flush()
	}
}
