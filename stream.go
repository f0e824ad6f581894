package chat

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

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

// serveStream sends the room's events: the replay the client asked for,
// then live messages, until the client leaves, the room closes, the
// subscriber is evicted or the config stops.
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
	sub, err := h.app.manager.Subscribe(room, pos, nil)
	if err != nil {
		return roomsError(err)
	}
	defer sub.Close()

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	rc := http.NewResponseController(w)
	// The retry hint goes first so that, even behind encode, the headers and
	// something the client can see leave at once.
	buf := sse.AppendRetry(nil, reconnectDelay)
	if sub.Reset {
		buf = sse.AppendEvent(buf, sse.Event{Name: "reset", Data: resetData(sub.Oldest)})
	}
	for _, m := range sub.Messages {
		buf = rooms.AppendFrame(buf, m)
	}
	if err := send(rc, w, buf); err != nil {
		return nil // the client is gone
	}
	sub.Messages = nil

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

// closeFrame tells a client that its room was deleted.
var closeFrame = sse.AppendEvent(nil, sse.Event{Name: "close", Data: []byte("{}")})

// writeQueued takes every queued frame, writes them and flushes once: one
// write and one flush however many messages arrived meanwhile. It returns the
// frames slice for reuse and whether the stream goes on.
func writeQueued(rc *http.ResponseController, w http.ResponseWriter, sub *rooms.Subscription, frames [][]byte) ([][]byte, bool) {
	frames, err := sub.Take(frames)
	if errors.Is(err, rooms.ErrEvicted) {
		return frames, false // too slow: it resumes from history instead
	}
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	for _, frame := range frames {
		if _, err := w.Write(frame); err != nil {
			return frames, false
		}
	}
	if errors.Is(err, rooms.ErrRoomClosed) {
		_, _ = w.Write(closeFrame)
	}
	clear(frames) // drop references to shared frames while idle
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
