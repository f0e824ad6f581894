package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-chat/caddy-chat/relay"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/sse"
)

// writeTimeout bounds one write to a stream. A client that stops reading
// fills its TCP window, and its stream would otherwise block forever: past
// eviction, past the stopping event, and with it Caddy's shutdown.
const writeTimeout = 10 * time.Second

// reconnectDelay is the retry hint sent to clients: a stream ended by a
// reload or an eviction resumes after this many milliseconds.
const reconnectDelay = 1000

// quickWrite is how long a shared relay writer waits on one client before
// it hands that client a goroutine of its own.
const quickWrite = 20 * time.Millisecond

// serveStream sends the room's events: the replay the client asked for,
// then live messages, until the client leaves, the room closes, the
// subscriber is evicted or the config stops.
//
// An HTTP/1 stream leaves the request path: the handler takes the connection
// over and hands it to the app's relay, which writes to it from a few shared
// goroutines. That frees the request goroutine and net/http's buffers, most
// of what an idle stream costs. Other streams (HTTP/2, or a chain that
// cannot hand its connection over) stay in the request path.
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
	release, err := h.streamSlot(r)
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")

	if r.ProtoMajor == 1 {
		relayed := h.app.relay.NewStream()
		sub, err := h.app.manager.Subscribe(room, pos, relayed.Wake)
		if err != nil {
			release()
			return roomsError(err)
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			startRelay(conn, hdr, relayed, sub, release)
			return nil
		}
		sub.Close() // this chain cannot hand the connection over
	}
	defer release()

	sub, err := h.app.manager.Subscribe(room, pos, nil)
	if err != nil {
		return roomsError(err)
	}
	defer sub.Close()
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := send(rc, w, streamStart(sub.Replay)); err != nil || sub.Truncated {
		return nil // the client is gone, or comes back for the rest of the replay
	}
	sub.Replay = rooms.Replay{} // written: not held for the life of the stream
	heartbeat := time.NewTicker(time.Duration(h.app.Heartbeat))
	defer heartbeat.Stop()
	wrote := false
	var frames [][]byte
	for {
		select {
		case <-sub.Ready():
			var ok bool
			if frames, ok = writeQueued(rc, w, sub, frames[:0]); !ok {
				return nil
			}
			wrote = true
		case <-heartbeat.C:
			if !wrote {
				if err := send(rc, w, sse.AppendComment(nil, "ping")); err != nil {
					return nil
				}
			}
			wrote = false
		case <-r.Context().Done():
			return nil
		case <-h.app.Stopping():
			return nil
		}
	}
}

// streamStart is what a stream begins with: the retry hint (sent first, so
// that even behind encode the headers leave at once), a reset event when the
// resume position was lost, then the replay.
func streamStart(rep rooms.Replay) []byte {
	buf := sse.AppendRetry(nil, reconnectDelay)
	if rep.Reset {
		buf = sse.AppendEvent(buf, sse.Event{Name: "reset", Data: resetData(rep.Oldest)})
	}
	return append(buf, rep.Frames...)
}

// startRelay writes the response head and the start of the stream on a
// connection taken over from net/http, then hands it to the relay. The body
// ends when the connection closes, so the head says Connection: close and
// needs no chunked encoding.
//
// release gives back the stream's slot in max_streams_per_client when the
// stream ends. A replay cut at the byte cap ends the stream once written:
// the client comes back after its last message for the rest.
func startRelay(conn net.Conn, hdr http.Header, relayed *relay.Stream, sub *rooms.Subscription, release func()) {
	end := func() { sub.Close(); release() }
	hdr = hdr.Clone()
	hdr.Set("Connection", "close")
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	hdr.Del("Content-Length")
	hdr.Del("Transfer-Encoding")
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = hdr.Write(&b)
	b.WriteString("\r\n")
	b.Write(streamStart(sub.Replay))
	truncated := sub.Truncated
	sub.Replay = rooms.Replay{}
	// net/http may have left its own deadlines on the connection.
	_ = conn.SetDeadline(time.Time{})
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := conn.Write(b.Bytes()); err != nil || truncated {
		_ = conn.Close()
		end()
		return
	}
	relayed.Attach(conn, streamSource{sub}, end)
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

// writeQueued takes every queued frame, writes them and flushes once: one
// write and one flush however many messages arrived meanwhile. It returns the
// frames slice for reuse and whether the stream goes on.
func writeQueued(rc *http.ResponseController, w http.ResponseWriter, sub *rooms.Subscription, frames [][]byte) ([][]byte, bool) {
	frames, err := streamSource{sub}.Take(frames)
	defer clear(frames) // drop references to shared frames while idle
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	for _, frame := range frames {
		if _, err := w.Write(frame); err != nil {
			return frames, false
		}
	}
	return frames, rc.Flush() == nil && err == nil
}

// send writes b and flushes it, within the write timeout.
func send(rc *http.ResponseController, w http.ResponseWriter, b []byte) error {
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := w.Write(b); err != nil {
		return err
	}
	return rc.Flush()
}

func resetData(oldest string) []byte {
	b, _ := json.Marshal(struct {
		Oldest string `json:"oldest"`
	}{oldest})
	return b
}
