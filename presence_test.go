package chat

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// nextPresence reads the stream's next presence event, skipping others,
// and returns it with when it came.
func (s *stream) nextPresence(t *testing.T) (rooms.PresenceChange, time.Time) {
	t.Helper()
	for {
		ev := s.next(t)
		if ev.Name != "presence" {
			continue
		}
		var c rooms.PresenceChange
		if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
			t.Fatalf("presence event %q: %v", ev.Data, err)
		}
		return c, time.Now()
	}
}

func presenceOf(t *testing.T, base, room string) rooms.Presence {
	t.Helper()
	resp := do(t, "GET", base+"/rooms/"+room+"/presence", "")
	var p rooms.Presence
	if err := json.Unmarshal([]byte(resp.body), &p); resp.status != http.StatusOK || err != nil {
		t.Fatalf("presence of %s: %d %s", room, resp.status, resp.body)
	}
	return p
}

// TestPresence: GET presence counts each named user's streams and the
// anonymous ones; a stream with ?presence=1 first hears who was announced,
// then joins and leaves, coalesced: at most one event a second, within 2 s
// of the change; /rooms counts the users.
func TestPresence(t *testing.T) {
	startCaddy(t, config{})
	room := roomFor(t, "p")
	stream := func(query string) *stream {
		return openStream(t, rootSite+"/stream/"+room+"?"+query)
	}
	watcher := stream("presence=1&user=alice")
	if c, _ := watcher.nextPresence(t); len(c.Joined)+len(c.Left) != 0 {
		t.Errorf("the first event in an empty room: %+v, want nobody", c)
	}
	stream("user=alice")
	bob := stream("user=bob")
	stream("")
	stream("presence=0")
	opened := time.Now()
	c, at := watcher.nextPresence(t)
	if strings.Join(c.Joined, ",") != "alice,bob" || len(c.Left) != 0 || at.Sub(opened) > 2*time.Second {
		t.Errorf("after joins: %+v after %v, want alice and bob joined within 2s", c, at.Sub(opened))
	}
	p := presenceOf(t, rootSite, room)
	want := rooms.Presence{Users: []rooms.UserPresence{{User: "alice", Streams: 2}, {User: "bob", Streams: 1}}, Anonymous: 2}
	if !presenceEqual(p, want) {
		t.Errorf("presence %+v, want %+v", p, want)
	}
	for _, info := range roomsList(t) {
		if info.Name == room && info.Users != 2 {
			t.Errorf("/rooms says %d users in the room, want 2", info.Users)
		}
	}

	// A late watcher hears who is here at once.
	late := stream("presence=1")
	if c, _ := late.nextPresence(t); strings.Join(c.Joined, ",") != "alice,bob" {
		t.Errorf("a late watcher first hears %+v, want alice and bob", c)
	}

	// Leaves and joins within a second are one event, a second after the
	// last.
	bob.close()
	closed := time.Now()
	stream("user=carol")
	stream("user=dave")
	c, at2 := watcher.nextPresence(t)
	if strings.Join(c.Joined, ",") != "carol,dave" || strings.Join(c.Left, ",") != "bob" ||
		at2.Sub(closed) > 2*time.Second || at2.Sub(at) < 900*time.Millisecond {
		t.Errorf("after bob left and carol, dave came: %+v, %v after the close and %v after the last event",
			c, at2.Sub(closed), at2.Sub(at))
	}
	if p := presenceOf(t, rootSite, room); len(p.Users) != 3 || p.Users[0].User != "alice" {
		t.Errorf("presence after bob left: %+v", p)
	}
}

// TestPresenceNames: identity names a stream, over ?user=; a bad user or
// presence value is refused; a room nobody opened has nobody in it.
func TestPresenceNames(t *testing.T) {
	startCaddy(t, config{handler: "identity {http.request.header.X-Name}"})
	room := roomFor(t, "p")
	openStream(t, rootSite+"/stream/"+room+"?user=mallory", "X-Name", "zed")
	openStream(t, rootSite+"/stream/"+room+"?user=ann")
	want := rooms.Presence{Users: []rooms.UserPresence{{User: "ann", Streams: 1}, {User: "zed", Streams: 1}}}
	if p := presenceOf(t, rootSite, room); !presenceEqual(p, want) {
		t.Errorf("presence %+v, want %+v", p, want)
	}
	for _, query := range []string{"presence=yes", "user=" + strings.Repeat("x", 65), "user=%0A"} {
		if resp := do(t, "GET", rootSite+"/stream/"+room+"?"+query, ""); resp.status != http.StatusBadRequest {
			t.Errorf("stream ?%s: %d, want 400", query, resp.status)
		}
	}
	if p := presenceOf(t, rootSite, roomFor(t, "nobody")); len(p.Users) != 0 || p.Anonymous != 0 {
		t.Errorf("a room nobody opened: %+v", p)
	}
}

func presenceEqual(a, b rooms.Presence) bool {
	return a.Anonymous == b.Anonymous && slices.Equal(a.Users, b.Users)
}

func roomsList(t *testing.T) []rooms.RoomInfo {
	t.Helper()
	resp := do(t, "GET", rootSite+"/rooms", "")
	var list struct{ Rooms []rooms.RoomInfo }
	if err := json.Unmarshal([]byte(resp.body), &list); err != nil {
		t.Fatalf("/rooms: %d %s", resp.status, resp.body)
	}
	return list.Rooms
}

// TestGRPCPresence: a gRPC stream is in its room's presence as an SSE
// stream is: as the signed-in user when the identity resolves (the request's
// user ignored), else as the user it names; it hears presence events when it
// asks; and the Presence call, ListRooms and the REST answers agree.
func TestGRPCPresence(t *testing.T) {
	startCaddy(t, grpcConfig("identity {http.request.header.X-Name}"))
	room := roomFor(t, "gp")
	c := grpcClient(rootSite)
	openRPCStream(t, c, &chatv1.StreamRequest{Room: room, User: "mallory"}, "X-Name", "carol")
	watcher := openRPCStream(t, c, &chatv1.StreamRequest{Room: room, User: "dave", Presence: true})
	announced := map[string]bool{}
	for !announced["carol"] || !announced["dave"] {
		ev := watcher.next(t)
		change := ev.GetPresence()
		if change == nil {
			t.Fatalf("event %v, want presence events only", ev)
		}
		for _, u := range change.GetJoined() {
			announced[u] = true
		}
		if len(change.GetLeft()) > 0 || announced["mallory"] {
			t.Fatalf("presence change %v, want carol and dave joining", change)
		}
	}

	resp, err := c.Presence(callCtx(t), connect.NewRequest(&chatv1.PresenceRequest{Room: room}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range resp.Msg.GetUsers() {
		got = append(got, u.GetUser()+":"+strconv.Itoa(int(u.GetStreams())))
	}
	if strings.Join(got, ",") != "carol:1,dave:1" || resp.Msg.GetAnonymous() != 0 {
		t.Errorf("Presence: %v and %d anonymous, want carol:1,dave:1 and none", got, resp.Msg.GetAnonymous())
	}
	if p := presenceOf(t, rootSite, room); len(p.Users) != 2 || p.Users[0].User != "carol" || p.Anonymous != 0 {
		t.Errorf("GET presence: %+v, want carol and dave", p)
	}
	list, err := c.ListRooms(callCtx(t), connect.NewRequest(&chatv1.ListRoomsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.Msg.GetRooms(), func(r *chatv1.Room) bool { return r.GetName() == room })
	if i < 0 || list.Msg.GetRooms()[i].GetUsers() != 2 || list.Msg.GetRooms()[i].GetSubscribers() != 2 {
		t.Errorf("ListRooms: %v, want %s with 2 users and 2 subscribers", list.Msg.GetRooms(), room)
	}
	if _, err := c.Presence(callCtx(t), connect.NewRequest(&chatv1.PresenceRequest{Room: "bad/name"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("Presence of a bad name: %v, want InvalidArgument", err)
	}
}
