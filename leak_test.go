package chat

import (
	"fmt"
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

// TestStreamsLeaveNoGoroutine: streams that end, whether the client leaves,
// the room is deleted or bad requests are refused, leave no goroutine behind
// in Caddy, the handler or the rooms.
func TestStreamsLeaveNoGoroutine(t *testing.T) {
	startCaddy(t, config{handler: "allow_delete"})
	room, doomed := roomFor(t, "a"), roomFor(t, "b")
	// Warm up what Caddy starts lazily, then take the baseline.
	warm := openStream(t, rootSite+"/stream/"+room)
	postJSON(t, rootSite, room, "alice", "warm up")
	warm.messages(t, 1)
	warm.close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	client.CloseIdleConnections()
	baseline := goleak.IgnoreCurrent()

	var streams []*stream
	for i := range 50 {
		target := room
		if i%2 == 0 {
			target = doomed
		}
		streams = append(streams, openStream(t, rootSite+"/stream/"+target))
	}
	postJSON(t, rootSite, room, "alice", "hello")
	do(t, "DELETE", rootSite+"/room/"+doomed, "")
	for i, s := range streams {
		if i%2 == 0 {
			s.end(t)
		} else {
			s.messages(t, 1)
		}
		s.close()
	}
	for i := range 20 {
		do(t, "GET", rootSite+fmt.Sprintf("/stream/bad%%2F%d", i), "")
		do(t, "POST", rootSite+"/submit", "{", "Content-Type", ctJSON)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	client.CloseIdleConnections()
	goleak.VerifyNone(t, baseline)
}
