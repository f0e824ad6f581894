package chat

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// streamSession is one reader's stream, whatever carries it: SSE in the
// request path (HTTP/2, HTTP/3), SSE relayed from a connection taken over
// (HTTP/1.1), or gRPC. Its life is written once, here and in streamLoop:
// the client's stream slot, the subscription with who the stream is in
// presence, the start (a reset and the replay), the live events, and the
// end, with its reason and its access-log entry. A protocol only writes,
// through its streamWire.
type streamSession struct {
	sub     *rooms.Subscription
	wire    *streamWire
	release func()       // gives back the slot in max_streams_per_client
	unwatch func()       // stops failing writes when the config stops
	entry   *accessEntry // nil while Caddy's own entry stands for the stream
}

// streamWire is what a protocol writes of a stream, through sw.
type streamWire struct {
	sw *streamWriter
	// start sends the response's head at once, so that a client waiting
	// on a quiet room knows that its stream is open, and the events the
	// stream starts with.
	start func([]*rooms.Event) error
	// write writes live events and flushes once.
	write func([]*rooms.Event) error
	// ping writes a heartbeat; nil where the protocol keeps its
	// connections alive itself.
	ping func() error
}

// errReplayCut ends a stream whose replay reached the byte cap once the
// replay is written: the client comes back after its last message for the
// rest.
var errReplayCut = errors.New("the replay reached its byte cap")

// startStream opens a stream of room from pos and writes its start through
// wire: it takes the client's stream slot, subscribes (wake runs when
// events are queued), and writes the head and the start events. An error
// before the head is a refusal, and nothing is held. A nil session with a
// nil error or errReplayCut is a stream that ended at its start: its client
// is gone, or comes back for the rest of the replay.
func (h *Handler) startStream(r *http.Request, room string, pos rooms.Position, wake func(), wire *streamWire) (*streamSession, error) {
	release, err := h.streamSlot(r)
	if err != nil {
		return nil, err
	}
	sub, err := h.app.manager.Subscribe(room, pos, wake)
	if err != nil {
		release()
		return nil, roomsError(err)
	}
	s := &streamSession{sub: sub, wire: wire, release: release, unwatch: wire.sw.failOnStop(h.app.stopCtx)}
	opened := false
	defer func() {
		// Also when a wrapper panics: the stream must not outlive the
		// request. Its entry is Caddy's own until the stream is opened.
		if !opened {
			s.end(nil, 0)
		}
	}()
	start, cut := sub.Events, sub.Truncated
	sub.Replay = rooms.Replay{} // not held for the life of the stream
	if err := wire.start(start); err != nil {
		return nil, nil
	}
	if cut {
		return nil, errReplayCut
	}
	opened = true
	return s, nil
}

// end ends the stream for err, having written relayed bytes past its
// writer (those of a relayed stream): it closes the subscription, gives the
// slot back and writes the access-log entry.
func (s *streamSession) end(err error, relayed int64) {
	s.unwatch()
	s.sub.Close()
	s.release()
	s.entry.write(s.wire.sw.written+relayed, err)
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

// streamUser sets who a stream is in its room's presence, and whether it
// receives presence events. The identity wins when it resolves; else the
// stream names its user as the client asked (?user= or the gRPC request's
// user), checked as a post's author is (a name reserved for a verified
// author counts as anonymous), or stays anonymous. A client keeps at most
// max_streams_per_client names present through this handler, as it holds
// at most that many streams.
func (h *Handler) streamUser(r *http.Request, user string, watch bool, pos *rooms.Position) error {
	pos.WatchPresence = watch
	pos.ReserveNames = *h.ReserveNames
	if id, ok := h.identity(r); ok {
		pos.User, pos.UserVerified = id, true
		return nil
	}
	if user != "" && !validUser(user) {
		return badRequest("user must be 1-64 printable characters")
	}
	pos.User = user
	return nil
}
