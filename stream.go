package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/relay"
	"github.com/caddy-chat/caddy-chat/rooms"
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

// quickWrite is how long a shared relay writer waits on one client before
// it hands that client a goroutine of its own.
const quickWrite = 20 * time.Millisecond

// serveStream sends the room's events: the replay the client asked for,
// then live messages, until the client leaves, the room closes, the
// subscriber is evicted or the config stops.
//
// An HTTP/1 stream leaves the request path once its response has begun: the
// handler takes the connection over and hands it to the app's relay, which
// writes to it from a few shared goroutines. That frees the request goroutine
// and net/http's buffers, most of what an idle stream costs. HTTP/2 streams
// stay in the request path.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, room string) error {
	if err := h.checkRoom(room); err != nil {
		return err
	}
	pos := rooms.Position{LastEventID: r.Header.Get("Last-Event-ID")}
	q := r.URL.Query()
	if pos.LastEventID == "" {
		pos.LastEventID = q.Get("last_event_id")
	}
	if s := q.Get("history"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return badRequest("history must be a whole number, 0 or more")
		}
		pos.History = n
	}
	if err := h.streamPresence(r, q, &pos); err != nil {
		return err
	}
	release, err := h.streamSlot(r)
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	// no-transform keeps encode, and any proxy that honours it, from
	// compressing the stream, which would hold events back in its buffers.
	hdr.Set("Cache-Control", "no-cache, no-transform")
	hdr.Set("X-Accel-Buffering", "no")

	if r.ProtoMajor == 1 {
		if hj, ok := innermost(w).(http.Hijacker); ok {
			return h.relayStream(w, r, hj, room, pos, release)
		}
	}
	defer release()

	sub, err := h.app.manager.Subscribe(room, pos, nil)
	if err != nil {
		return roomsError(err)
	}
	defer sub.Close()
	w.WriteHeader(http.StatusOK)
	sw := newStreamWriter(w)
	defer sw.failOnStop(h.app.stopCtx)()
	start, truncated := streamStart(sub.Replay), sub.Truncated
	sub.Replay = rooms.Replay{} // not held for the life of the stream
	if err := sw.send(start); err != nil || truncated {
		return nil // the client is gone, or comes back for the rest of the replay
	}
	// The heartbeat timer is not reset by each write: when it fires, a
	// stream written meanwhile just waits for the rest of its interval.
	interval := time.Duration(h.app.Heartbeat)
	lastWrite := time.Now()
	heartbeat := time.NewTimer(interval)
	defer heartbeat.Stop()
	var frames [][]byte
	for {
		select {
		case <-sub.Ready():
			var ok bool
			if frames, ok = sw.writeQueued(sub, frames[:0]); !ok {
				return nil
			}
			lastWrite = time.Now()
		case <-heartbeat.C:
			if idle := time.Since(lastWrite); idle < interval {
				heartbeat.Reset(interval - idle)
				continue
			}
			if err := sw.send(sse.AppendComment(nil, "ping")); err != nil {
				return nil
			}
			lastWrite = time.Now()
			heartbeat.Reset(interval)
		case <-r.Context().Done():
			return nil
		case <-h.app.Stopping():
			return nil
		}
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
// skips the request for the same reason; the stream is logged when it ends.
//
// release gives back the stream's slot in max_streams_per_client when the
// stream ends. A replay cut at the byte cap ends the stream once written,
// without a takeover: the client comes back after its last message for the
// rest.
func (h *Handler) relayStream(w http.ResponseWriter, r *http.Request, hj http.Hijacker, room string, pos rooms.Position, release func()) error {
	relayed := h.app.relay.NewStream()
	sub, err := h.app.manager.Subscribe(room, pos, relayed.Wake)
	if err != nil {
		release()
		return roomsError(err)
	}
	end := func() { sub.Close(); release() }
	begun := time.Now()
	w.Header().Set("Transfer-Encoding", "identity")
	w.WriteHeader(http.StatusOK)
	start, truncated := streamStart(sub.Replay), sub.Truncated
	sub.Replay = rooms.Replay{}
	sw := newStreamWriter(w)
	unwatch := sw.failOnStop(h.app.stopCtx)
	err = sw.send(start)
	unwatch() // from here on, the relay ends the stream on stop
	if err != nil || truncated {
		end()
		return nil // the client is gone, or comes back for the rest of the replay
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		// The response has begun: it ends here, and the client reconnects.
		end()
		h.logger.Error("taking a stream's connection over", zap.String("room", room), zap.Error(err))
		return nil
	}
	caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
	if !accessLogged(r) {
		relayed.Attach(conn, streamSource{sub}, func(relay.Ended) { end() })
		return nil
	}
	// The closure outlives the request: it keeps only what it logs.
	remote, startLen := r.RemoteAddr, int64(len(start))
	relayed.Attach(conn, streamSource{sub}, func(ended relay.Ended) {
		end()
		h.logger.Info("stream ended",
			zap.String("room", room),
			zap.Int("status", http.StatusOK),
			zap.Int64("bytes", startLen+ended.Written),
			zap.Duration("duration", time.Since(begun)),
			zap.String("reason", endReason(ended.Err)),
			zap.String("remote_addr", remote))
	})
	return nil
}

// streamSlot counts a stream against its client's max_streams_per_client
// and returns the function that gives the slot back, safe to call more than
// once; or, past the limit, a 429.
func (h *Handler) streamSlot(r *http.Request) (release func(), err error) {
	key := h.clientKey(r)
	if !h.streams.Acquire(key) {
		return nil, &apiError{status: http.StatusTooManyRequests, retryAfter: capacityRetry, label: "too_many_streams",
			message: fmt.Sprintf("this client has %d streams open, the most allowed; close one", h.MaxStreamsPerClient)}
	}
	return sync.OnceFunc(func() { h.streams.Release(key) }), nil
}

// accessLogged reports whether the site logs its requests (it has a log
// directive): a taken-over stream, which the access log skips, then logs
// itself when it ends, and a site without one gets no line per stream.
func accessLogged(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.Logs != nil
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

// endReason names why a relayed stream ended, for its log line.
func endReason(err error) string {
	switch {
	case errors.Is(err, relay.ErrClientLeft):
		return "client_left"
	case errors.Is(err, relay.ErrPoolClosed), errors.Is(err, rooms.ErrClosed):
		return "stopping"
	case errors.Is(err, rooms.ErrEvicted):
		return "evicted"
	case errors.Is(err, rooms.ErrRoomClosed):
		return "room_deleted"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "write_timeout"
	}
	return "write_error"
}

// streamStart is what a stream begins with: its retry hint, a reset event
// when the resume position was lost, then the replay.
func streamStart(rep rooms.Replay) []byte {
	buf := sse.AppendRetry(nil, minReconnectDelay+rand.IntN(maxReconnectDelay-minReconnectDelay+1))
	if rep.Reset {
		buf = sse.AppendEvent(buf, sse.Event{Name: "reset", Data: resetData(rep.Oldest)})
	}
	return append(buf, rep.Frames...)
}

// streamSource is what either kind of stream writes from a subscription: an
// evicted subscriber is sent nothing more (it resumes from history), and a
// deleted room's stream ends with the close event.
type streamSource struct{ sub *rooms.Subscription }

// Take appends the frames to write to dst; a non-nil error ends the stream
// after them.
func (s streamSource) Take(dst [][]byte) ([][]byte, error) {
	n := len(dst)
	frames, err := s.sub.Take(dst)
	switch {
	case errors.Is(err, rooms.ErrEvicted):
		clear(frames[n:])
		return frames[:n], err
	case errors.Is(err, rooms.ErrRoomClosed):
		return append(frames, closeFrame), err
	}
	return frames, err
}

// closeFrame tells a client that its room was deleted.
var closeFrame = sse.AppendEvent(nil, sse.Event{Name: "close", Data: []byte("{}")})

// streamWriter writes a stream in the request path. Each write has the write
// timeout, and the deadline is cleared once the write is done: over HTTP/2 a
// deadline left behind resets an idle stream when it passes. When the config
// stops, a write blocked on a client that reads nothing fails at once instead
// of holding the stop for the whole timeout.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// conn is the innermost writer, the connection's own, whose deadline
	// may be set from another goroutine; the wrappers' may not.
	conn *http.ResponseController

	mu      sync.Mutex // orders deadline changes against the stop
	stopped bool
	writing bool // a write is under way: the stop fails only that
}

// errStopped fails the writes of a stream whose config has stopped.
var errStopped = errors.New("the config stopped")

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w), conn: http.NewResponseController(innermost(w))}
}

// within runs write under the write timeout, set through the wrappers so
// that they know of it, and clears the deadline after. Once the config has
// stopped it refuses to start a write.
func (sw *streamWriter) within(write func() error) error {
	sw.mu.Lock()
	if sw.stopped {
		sw.mu.Unlock()
		return errStopped
	}
	sw.writing = true
	_ = sw.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	sw.mu.Unlock()
	defer func() {
		sw.mu.Lock()
		sw.writing = false
		if !sw.stopped {
			_ = sw.rc.SetWriteDeadline(time.Time{})
		}
		sw.mu.Unlock()
	}()
	return write()
}

// failOnStop fails the stream's write under way once ctx is done, and
// refuses later ones; it leaves an idle stream alone, since over HTTP/2 a
// deadline in the past resets the stream, and the handler ends it on stop
// with what its protocol says. The returned function stops watching and
// waits for a failing in progress: the connection's writer may only be
// touched while the handler runs.
func (sw *streamWriter) failOnStop(ctx context.Context) (unwatch func()) {
	done, failed := make(chan struct{}), make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(failed)
		sw.mu.Lock()
		sw.stopped = true
		sw.mu.Unlock()
		// A wrapper (Caddy's write idle timeout) re-arms the deadline
		// between the chunks of a write: fail it until the handler is
		// done with the writer.
		for {
			sw.mu.Lock()
			if sw.writing {
				_ = sw.conn.SetWriteDeadline(time.Now())
			}
			sw.mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	return func() {
		if !stop() {
			close(done)
			<-failed
		}
	}
}

// writeQueued takes every queued frame, writes them and flushes once: one
// write and one flush however many messages arrived meanwhile. It returns the
// frames slice for reuse and whether the stream goes on.
func (sw *streamWriter) writeQueued(sub *rooms.Subscription, frames [][]byte) ([][]byte, bool) {
	frames, err := streamSource{sub}.Take(frames)
	defer clear(frames) // drop references to shared frames while idle
	written := sw.within(func() error {
		for _, frame := range frames {
			if _, err := sw.w.Write(frame); err != nil {
				return err
			}
		}
		return sw.rc.Flush()
	})
	return frames, written == nil && err == nil
}

// send writes b and flushes it, within the write timeout.
func (sw *streamWriter) send(b []byte) error {
	return sw.within(func() error {
		if _, err := sw.w.Write(b); err != nil {
			return err
		}
		return sw.rc.Flush()
	})
}

func resetData(oldest string) []byte {
	b, _ := json.Marshal(struct {
		Oldest string `json:"oldest"`
	}{oldest})
	return b
}
