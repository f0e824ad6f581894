package chat

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-chat/caddy-chat/broadcast"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
)

// TestPanickingStreamLetsGo: a stream whose write panics once it is open,
// as a wrapper of another module may, ends all the same: its client's slot,
// its subscription and its user in presence are given back, and the
// client's next stream opens.
func TestPanickingStreamLetsGo(t *testing.T) {
	m := rooms.New(rooms.Config{History: 10, Buffer: 16})
	defer m.Close()
	stop, cancel := context.WithCancel(context.Background())
	defer cancel()
	sweeper := newSweeper(time.Hour)
	defer sweeper.stop()
	h := &Handler{
		app: &App{Heartbeat: caddy.Duration(time.Hour), stopCtx: stop, sweeper: sweeper},
		svc: service.New(m, service.Config{MaxMessageSize: 100, MaxStreamsPerClient: 1, MaxNewRoomsPerClient: 1, NewRoomsWindow: time.Hour}),
	}
	bob := service.Caller{Addr: "192.0.2.1"}
	for attempt := range 2 {
		r := httptest.NewRequest("GET", "/stream/lobby", nil)
		wake := broadcast.NewSignal()
		sw := newStreamWriter(httptest.NewRecorder())
		wire := &streamWire{
			sw:    sw,
			start: func([]*rooms.Event) error { return nil },
			write: func([]*rooms.Event) error { panic(http.ErrAbortHandler) },
		}
		s, err := h.startStream(bob, service.StreamRequest{Room: "lobby", User: "bob"}, wake.Wake, wire)
		if err != nil || s == nil {
			t.Fatalf("stream %d: %v", attempt, err)
		}
		if p, _ := m.Presence("lobby"); len(p.Users) != 1 {
			t.Fatalf("presence with bob's stream open: %+v", p)
		}
		if _, err := h.svc.Submit(context.Background(), bob, service.Post{Room: "lobby", Message: "hi"}); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if p := recover(); p != http.ErrAbortHandler {
					t.Fatalf("the stream's write panicked with %v", p)
				}
			}()
			s.live(h, r, wake)
		}()
		if p, _ := m.Presence("lobby"); len(p.Users) != 0 || p.Anonymous != 0 {
			t.Errorf("presence after the panic: %+v, want nobody", p)
		}
	}
}
