package chat

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/caddy-chat/caddy-chat/broadcast"
	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/proto/chat/v1/chatv1connect"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
	"github.com/caddy-chat/caddy-chat/token"
)

// The gRPC adapter serves chat.v1.ChatService with connect-go, which speaks
// gRPC, gRPC-Web and the Connect protocol from one handler. It is a thin
// translation: every call goes to the same service as the REST and SSE
// API, its streams run the same lifecycle (streamSession), and refusals are
// answered from the same table (refusals).

// newRPC builds the handler of the gRPC API.
func (h *Handler) newRPC() *http.ServeMux {
	mux := http.NewServeMux()
	// A message larger than a submit body may be is refused before it is
	// decoded, as a REST body is. Responses no larger are never compressed:
	// a stream would compress each message again for each reader, which
	// cost more than all else a delivery takes (SSE streams are not
	// compressed either). Larger History answers are.
	svc := rpcService{h}
	mux.Handle(chatv1connect.NewChatServiceHandler(svc,
		connect.WithCodec(protoCodec{}),
		connect.WithReadMaxBytes(int(h.MaxBodySize)),
		connect.WithCompressMinBytes(int(h.MaxBodySize)+1)))
	mux.Handle(reflectionPath, newReflectionHandler())
	return mux
}

// rpcCall carries the HTTP request of a call to the service's methods, which
// connect hands only the context, and its caller, resolved from it as for
// any other request. sw is the writer connect writes the response to, and
// body counts the request's bytes for a stream's access-log entry.
type rpcCall struct {
	r      *http.Request
	caller service.Caller
	sw     *streamWriter
	body   countedBody
}

type rpcCallKey struct{}

// serveRPC serves a call to the gRPC API.
func (h *Handler) serveRPC(w http.ResponseWriter, r *http.Request) {
	call := &rpcCall{caller: h.caller(r), sw: newStreamWriter(w), body: countedBody{ReadCloser: r.Body}}
	call.r = r.WithContext(context.WithValue(r.Context(), rpcCallKey{}, call))
	call.r.Body = &call.body
	h.rpc.ServeHTTP(call.sw, call.r)
}

func callOf(ctx context.Context) *rpcCall {
	return ctx.Value(rpcCallKey{}).(*rpcCall)
}

// rpcService implements chatv1connect.ChatServiceHandler on a Handler.
type rpcService struct{ h *Handler }

// Submit posts a message, as POST /submit does; the idempotency key is
// scoped like the Idempotency-Key header, so a key sent over either adapter
// names the same message.
func (s rpcService) Submit(ctx context.Context, req *connect.Request[chatv1.SubmitRequest]) (*connect.Response[chatv1.Message], error) {
	h, call := s.h, callOf(ctx)
	key := req.Msg.GetIdempotencyKey()
	posted, err := h.svc.Submit(ctx, call.caller, service.Post{
		Room: req.Msg.GetRoom(), User: req.Msg.GetUser(), Message: req.Msg.GetMessage(),
		Key: key, KeyGiven: key != "",
	})
	if err != nil {
		return nil, h.rpcError(ctx, err)
	}
	msg := rpcMessage(posted.Message)
	msg.Secret = posted.Secret
	return connect.NewResponse(msg), nil
}

// errResume ends a stream that the client should open again after the last
// message it received: on stop and reload, after an eviction, and after a
// replay cut at the byte cap. Unavailable is the code gRPC clients retry.
func errResume(why string) error {
	return connect.NewError(connect.CodeUnavailable, errors.New(why+"; resume with the id of the last message received"))
}

// Stream sends a room's events as GET /stream/{room} does: a reset when the
// position was lost, the replay, then live messages, and presence events
// when asked.
func (s rpcService) Stream(ctx context.Context, req *connect.Request[chatv1.StreamRequest], stream *connect.ServerStream[chatv1.StreamEvent]) error {
	h, call := s.h, callOf(ctx)
	room := req.Msg.GetRoom()
	streamReq := service.StreamRequest{
		Room: room, LastEventID: req.Msg.GetLastEventId(), History: int(req.Msg.GetHistory()),
		User: req.Msg.GetUser(), Presence: req.Msg.GetPresence(),
	}
	wake := broadcast.NewSignal()
	st, err := h.startStream(call.caller, streamReq, wake.Wake, rpcWire(call.sw, stream.Conn()))
	switch {
	case errors.Is(err, errReplayCut):
		return errResume(err.Error())
	case err != nil:
		return h.rpcError(ctx, err)
	case st == nil:
		return nil // the client is gone
	}
	st.entry = h.pastWrappers(call.r, call.sw, room)
	switch endReason(st.live(h, call.r, wake)) {
	case "evicted":
		return errResume("this stream fell behind")
	case "stopping":
		return errResume("the server is stopping or reloading")
	case "token_expired":
		// As a token refused at the start: the client fetches a
		// fresh one, and resumes with it.
		return h.rpcError(ctx, service.TokenRefusal(&token.Error{Reason: token.Expired}))
	}
	return nil // the client left, the room was deleted, or a write failed
}

// rpcWire writes a stream as gRPC stream events through sw, to conn. On
// stop, a write under way fails; an idle stream ends with the status that
// tells its client to resume. gRPC has no heartbeat of its own: HTTP/2
// keeps the connection alive.
func rpcWire(sw *streamWriter, conn connect.StreamingHandlerConn) *streamWire {
	write := func(events []*rooms.Event) error {
		// connect sends each message with a flush, which sw holds back
		// until the batch is written.
		encodeAside(rpcEvents, events)
		return sw.flushed(func() error {
			for _, e := range events {
				ev := rpcEvents.Encode(e)
				if ev.StreamEvent == nil {
					continue // not in the gRPC API
				}
				if err := conn.Send(ev); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return &streamWire{
		sw: sw,
		start: func(events []*rooms.Event) error {
			// The headers go out at once, through the wrappers. Incremental
			// (RFC 10036) lets them past a wrapper that holds a head back
			// until the body's first bytes, as encode does: a stream with
			// nothing to replay would not open before its first event.
			conn.ResponseHeader().Set("Incremental", "?1")
			if err := sw.within(func() error { return conn.Send(nil) }); err != nil {
				return err
			}
			return write(events)
		},
		write: write,
	}
}

// rpcEvents encodes the rooms' events as stream events: each is made and
// marshalled once, by the first stream to send it, and shared by all.
var rpcEvents = rooms.NewCodec(func(e *rooms.Event) *sharedEvent {
	ev := &sharedEvent{StreamEvent: rpcStreamEvent(e)}
	if ev.StreamEvent != nil {
		// An event that does not encode is left to the codec, which fails
		// the stream's send with the reason.
		ev.encoded, _ = proto.Marshal(ev.StreamEvent)
	}
	return ev
})

// rpcStreamEvent is e as the gRPC API has it, nil for an event it lacks.
func rpcStreamEvent(e *rooms.Event) *chatv1.StreamEvent {
	switch e.Kind {
	case rooms.EventMessage:
		return rpcEvent(e.Message)
	case rooms.EventReset:
		return &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Reset_{Reset_: &chatv1.Reset{Oldest: e.Oldest}}}
	case rooms.EventClose:
		return &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Closed{Closed: &chatv1.Closed{}}}
	case rooms.EventPresence:
		return &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Presence{Presence: &chatv1.PresenceChange{Joined: e.Presence.Joined, Left: e.Presence.Left}}}
	case rooms.EventEdit:
		return &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Edit{Edit: rpcEdit(&e.Message)}}
	case rooms.EventDelete:
		return &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Delete{Delete: rpcDelete(&e.Message)}}
	}
	return nil
}

// sharedEvent is an event sent to all the readers of its room, with its
// protobuf encoding, which protoCodec sends as it is to each of them.
// It is a proto.Message, the event's own, for any other codec (JSON).
type sharedEvent struct {
	*chatv1.StreamEvent
	encoded []byte
}

// protoCodec is connect's protobuf codec, but for a sharedEvent, whose
// encoding it copies instead of encoding the event again. connect appends
// each message to a buffer of its own, so the shared bytes are never
// written to.
type protoCodec struct{}

// Name is the codec's name in content types, the one it stands in for.
func (protoCodec) Name() string { return "proto" }

// Marshal encodes a message.
func (c protoCodec) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

// MarshalAppend appends the encoding of a message to dst.
func (protoCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	if ev, ok := m.(*sharedEvent); ok && ev.encoded != nil {
		return append(dst, ev.encoded...), nil
	}
	pm, err := asProto(m)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

// MarshalStable encodes a message deterministically.
func (protoCodec) MarshalStable(m any) ([]byte, error) {
	pm, err := asProto(m)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(pm)
}

// Unmarshal decodes a message.
func (protoCodec) Unmarshal(b []byte, m any) error {
	pm, err := asProto(m)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(b, pm); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

// asProto is m as a protobuf message, which every codec call is given.
func asProto(m any) (proto.Message, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return pm, nil
}

// IsBinary reports that the encoding is not text.
func (protoCodec) IsBinary() bool { return true }

// ListRooms lists rooms as GET /rooms does.
func (s rpcService) ListRooms(ctx context.Context, _ *connect.Request[chatv1.ListRoomsRequest]) (*connect.Response[chatv1.ListRoomsResponse], error) {
	list, err := s.h.svc.Rooms(callOf(ctx).caller)
	if err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	out := &chatv1.ListRoomsResponse{Rooms: make([]*chatv1.Room, 0, len(list))}
	for _, info := range list {
		out.Rooms = append(out.Rooms, &chatv1.Room{Name: info.Name, Subscribers: uint32(info.Subscribers), Users: uint32(info.Users), LastId: info.LastID})
	}
	return connect.NewResponse(out), nil
}

// History reads retained messages as GET /rooms/{room}/messages does.
func (s rpcService) History(ctx context.Context, req *connect.Request[chatv1.HistoryRequest]) (*connect.Response[chatv1.HistoryResponse], error) {
	limit := service.DefaultHistoryLimit
	if n := req.Msg.GetLimit(); n != 0 {
		limit = int(min(n, service.MaxHistoryLimit+1))
	}
	rep, err := s.h.svc.History(callOf(ctx).caller, req.Msg.GetRoom(), req.Msg.GetAfter(), req.Msg.GetBefore(), limit)
	if err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	out := &chatv1.HistoryResponse{Reset_: rep.Reset, Oldest: rep.Oldest, More: rep.Truncated, Messages: make([]*chatv1.Message, 0, len(rep.Messages))}
	for _, msg := range rep.Messages {
		out.Messages = append(out.Messages, rpcMessage(msg))
	}
	return connect.NewResponse(out), nil
}

// DeleteRoom deletes a room as DELETE /room/{room} does.
func (s rpcService) DeleteRoom(ctx context.Context, req *connect.Request[chatv1.DeleteRoomRequest]) (*connect.Response[chatv1.DeleteRoomResponse], error) {
	if err := s.h.deleteRoom(callOf(ctx).caller, req.Msg.GetRoom()); err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	return connect.NewResponse(&chatv1.DeleteRoomResponse{}), nil
}

// Presence tells who is in a room, as GET /rooms/{room}/presence does.
func (s rpcService) Presence(ctx context.Context, req *connect.Request[chatv1.PresenceRequest]) (*connect.Response[chatv1.PresenceResponse], error) {
	p, err := s.h.svc.Presence(callOf(ctx).caller, req.Msg.GetRoom())
	if err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	out := &chatv1.PresenceResponse{Anonymous: uint32(p.Anonymous), Users: make([]*chatv1.UserPresence, 0, len(p.Users))}
	for _, u := range p.Users {
		out.Users = append(out.Users, &chatv1.UserPresence{User: u.User, Streams: uint32(u.Streams)})
	}
	return connect.NewResponse(out), nil
}

// EditMessage edits a message as PATCH /rooms/{room}/messages/{id} does.
func (s rpcService) EditMessage(ctx context.Context, req *connect.Request[chatv1.EditMessageRequest]) (*connect.Response[chatv1.Edit], error) {
	in := req.Msg
	edit, err := s.h.svc.EditMessage(ctx, callOf(ctx).caller, in.GetRoom(), in.GetId(), in.GetMessage(), in.GetSecret())
	if err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	return connect.NewResponse(rpcEdit(&edit)), nil
}

// DeleteMessage erases a message as DELETE /rooms/{room}/messages/{id}
// does.
func (s rpcService) DeleteMessage(ctx context.Context, req *connect.Request[chatv1.DeleteMessageRequest]) (*connect.Response[chatv1.Delete], error) {
	in := req.Msg
	del, err := s.h.deleteMessage(ctx, callOf(ctx).caller, in.GetRoom(), in.GetId(), in.GetSecret())
	if err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	return connect.NewResponse(rpcDelete(&del)), nil
}

// rpcEdit is the edit m as the gRPC API has it, in a stream and as
// EditMessage's answer.
func rpcEdit(m *rooms.Message) *chatv1.Edit {
	return &chatv1.Edit{Id: m.ID, Target: m.Target, Message: m.Message, Time: timestamppb.New(m.Time)}
}

// rpcDelete is the delete m as the gRPC API has it, in a stream and as
// DeleteMessage's answer.
func rpcDelete(m *rooms.Message) *chatv1.Delete {
	return &chatv1.Delete{Id: m.ID, Target: m.Target, By: m.By(), Time: timestamppb.New(m.Time)}
}

// Ban puts a ban as POST /rooms/{room}/bans does.
func (s rpcService) Ban(ctx context.Context, req *connect.Request[chatv1.BanRequest]) (*connect.Response[chatv1.BanInfo], error) {
	c, in := callOf(ctx).caller, req.Msg
	// Refused before the rest of the request is looked at, as over HTTP.
	if err := s.h.svc.MayModerate(c, in.GetRoom()); err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	r := service.BanRequest{Message: in.GetMessage(), User: in.GetUser(), Reason: in.GetReason(), Purge: in.GetPurge()}
	switch {
	case in.GetForever() && in.Duration != nil:
		return nil, s.h.rpcError(ctx, badRequest("give a duration or forever, not both"))
	case in.GetForever():
		r.For = service.Forever
	case in.Duration != nil:
		if err := in.Duration.CheckValid(); err != nil || in.Duration.AsDuration() <= 0 {
			return nil, s.h.rpcError(ctx, badRequest("a ban's duration must be positive"))
		}
		r.For = in.Duration.AsDuration()
	}
	ban, err := s.h.ban(c, in.GetRoom(), r)
	if ban.ID == "" {
		return nil, s.h.rpcError(ctx, err)
	}
	res := connect.NewResponse(rpcBan(ban))
	if err != nil {
		// In force, as HTTP's 201 with purge_failed says.
		res.Header().Set("chat-purge-failed", "true")
	}
	return res, nil
}

// Unban lifts a ban as DELETE /rooms/{room}/bans/{id} does.
func (s rpcService) Unban(ctx context.Context, req *connect.Request[chatv1.UnbanRequest]) (*connect.Response[chatv1.UnbanResponse], error) {
	if err := s.h.unban(callOf(ctx).caller, req.Msg.GetRoom(), req.Msg.GetId()); err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	return connect.NewResponse(&chatv1.UnbanResponse{}), nil
}

// ListBans lists bans as GET /rooms/{room}/bans does.
func (s rpcService) ListBans(ctx context.Context, req *connect.Request[chatv1.ListBansRequest]) (*connect.Response[chatv1.ListBansResponse], error) {
	bans, err := s.h.svc.Bans(callOf(ctx).caller, req.Msg.GetRoom())
	if err != nil {
		return nil, s.h.rpcError(ctx, err)
	}
	out := &chatv1.ListBansResponse{Bans: make([]*chatv1.BanInfo, 0, len(bans))}
	for _, b := range bans {
		out.Bans = append(out.Bans, rpcBan(b))
	}
	return connect.NewResponse(out), nil
}

// rpcBan is b as moderators see it, as banView is over HTTP.
func rpcBan(b rooms.Ban) *chatv1.BanInfo {
	v := viewOfBan(b)
	info := &chatv1.BanInfo{Id: v.ID, Room: v.Room, User: v.User, Reason: v.Reason, By: v.By, Created: timestamppb.New(v.Created)}
	if v.Expires != nil {
		info.Expires = timestamppb.New(*v.Expires)
	}
	return info
}

func rpcMessage(m rooms.Message) *chatv1.Message {
	msg := &chatv1.Message{Id: m.ID, Room: m.Room, User: m.User, Message: m.Message, Time: timestamppb.New(m.Time), Verified: m.Verified}
	if !m.Edited.IsZero() {
		msg.Edited = timestamppb.New(m.Edited)
	}
	return msg
}

func rpcEvent(m rooms.Message) *chatv1.StreamEvent {
	return &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Message{Message: rpcMessage(m)}}
}
