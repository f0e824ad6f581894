package chat

import (
	"errors"
	"net/http"

	"github.com/caddy-chat/caddy-chat/broadcast"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
)

// streamSession is one reader's stream, whatever carries it: SSE in the
// request path (HTTP/2, HTTP/3), SSE relayed from a connection taken over
// (HTTP/1.1), or gRPC. Its life is written once, here and in streamLoop:
// the service opens the stream (the client's stream slot, the subscription
// with who the stream is in presence), then the start (a reset and the
// replay), the live events, and the end, with its reason and its access-log
// entry. A protocol only writes, through its streamWire.
type streamSession struct {
	stream  *service.Stream
	wire    *streamWire  // nil once the relay writes the stream
	unwatch func()       // stops the sweeper and the config's stop from failing its writes
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

// startStream opens the stream that req asks c for and writes its start
// through wire: wake runs when events are queued for it. An error before the
// head is a refusal, and nothing is held. A nil session with a nil error or
// errReplayCut is a stream that ended at its start: its client is gone, or
// comes back for the rest of the replay.
func (h *Handler) startStream(c service.Caller, req service.StreamRequest, wake func(), wire *streamWire) (*streamSession, error) {
	stream, err := h.svc.OpenStream(c, req, wake)
	if err != nil {
		return nil, err
	}
	// The stream's time is kept from here, so that its start is written
	// within the write timeout too; a relayed stream stops being watched
	// once its start is out.
	var heartbeat func()
	if wire.ping != nil {
		heartbeat = wake
	}
	s := &streamSession{stream: stream, wire: wire, unwatch: wire.sw.watch(h.app.stopCtx, h.app.sweeper, heartbeat)}
	opened := false
	defer func() {
		// Also when a wrapper panics: the stream must not outlive the
		// request. Its entry is Caddy's own until the stream is opened.
		if !opened {
			s.end(nil, wire.sw.written)
		}
	}()
	start, cut := stream.Events, stream.Truncated
	stream.Replay = rooms.Replay{} // not held for the life of the stream
	if err := wire.start(start); err != nil {
		return nil, nil
	}
	if cut {
		return nil, errReplayCut
	}
	opened = true
	return s, nil
}

// errAborted ends a stream whose handler panicked.
var errAborted = errors.New("the stream's handler panicked")

// live writes the stream's live events in the request path (see
// streamLoop) and ends it, with why it ended, also when a write panics: its
// slot, subscription and presence never outlive the request.
func (s *streamSession) live(h *Handler, r *http.Request, wake broadcast.Signal) (err error) {
	err = errAborted
	defer func() { s.end(err, s.wire.sw.written) }()
	err = h.streamLoop(r, s.stream.Subscription, wake, s.wire)
	return err
}

// end ends the stream for err, having sent size bytes of body: it closes
// the stream, which gives its slot back, and writes the access-log entry.
func (s *streamSession) end(err error, size int64) {
	s.unwatch()
	s.stream.Close()
	s.entry.write(size, err)
}
