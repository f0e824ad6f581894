package chat

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/proto/chat/v1/chatv1connect"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// grpcConfig serves the gRPC API beside everything else, over HTTP/1.1, h2c
// and (on HTTPS sites) h2.
func grpcConfig(handler string) config {
	return config{options: "servers {\n protocols h1 h2 h2c\n }", handler: "grpc on\n " + handler}
}

// grpcClient speaks real gRPC over h2c, as a backend service would.
func grpcClient(base string) chatv1connect.ChatServiceClient {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return chatv1connect.NewChatServiceClient(&http.Client{Transport: tr}, base, connect.WithGRPC())
}

// connectClient speaks the Connect protocol over HTTP/1.1, as a web app
// would.
func connectClient(base string) chatv1connect.ChatServiceClient {
	return chatv1connect.NewChatServiceClient(&http.Client{Transport: &http.Transport{}}, base)
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// rpcStream is an open Stream call whose events arrive on a channel, so that
// every read has a deadline.
type rpcStream struct {
	events <-chan *chatv1.StreamEvent
	done   chan error // the call's end: nil or its error
	cancel context.CancelFunc
}

// openRPCStream opens a Stream call with req, and headers as name, value
// pairs.
func openRPCStream(t *testing.T, c chatv1connect.ChatServiceClient, req *chatv1.StreamRequest, headers ...string) *rpcStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, done := make(chan *chatv1.StreamEvent, 100), make(chan error, 1)
	s := &rpcStream{events: events, done: done, cancel: cancel}
	opened := make(chan error, 1)
	call := connect.NewRequest(req)
	for i := 0; i+1 < len(headers); i += 2 {
		call.Header().Set(headers[i], headers[i+1])
	}
	go func() {
		defer close(events)
		stream, err := c.Stream(ctx, call)
		opened <- err
		if err != nil {
			done <- err
			return
		}
		defer stream.Close()
		for stream.Receive() {
			events <- stream.Msg()
		}
		done <- stream.Err()
	}()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("opening a gRPC stream: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("a gRPC stream did not open")
	}
	return s
}

func (s *rpcStream) next(t *testing.T) *chatv1.StreamEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatalf("the gRPC stream ended: %v", <-s.done)
		}
		return ev
	case <-time.After(wait):
		t.Fatal("no gRPC stream event")
	}
	return nil
}

// end waits for the stream to end and returns its error.
func (s *rpcStream) end(t *testing.T, within time.Duration) error {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return <-s.done
			}
		case <-deadline:
			t.Fatalf("the gRPC stream did not end within %v", within)
		}
	}
}

func submitRPC(t *testing.T, c chatv1connect.ChatServiceClient, room, user, text, key string) *chatv1.Message {
	t.Helper()
	resp, err := c.Submit(callCtx(t), connect.NewRequest(&chatv1.SubmitRequest{Room: room, User: user, Message: text, IdempotencyKey: key}))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return resp.Msg
}

// TestGRPCAndSSEShareRooms: a message posted over gRPC reaches an SSE stream
// with the same id, and one posted over REST reaches a gRPC stream, over
// gRPC on h2c, and the Connect protocol and gRPC-Web on HTTP/1.1, at a site
// root and under a path.
func TestGRPCAndSSEShareRooms(t *testing.T) {
	startCaddy(t, grpcConfig(""))
	for name, base := range map[string]string{"root": rootSite, "mounted": chatBase} {
		clients := map[string]chatv1connect.ChatServiceClient{
			"grpc":    grpcClient(base),
			"connect": connectClient(base),
			"grpcweb": chatv1connect.NewChatServiceClient(&http.Client{Transport: &http.Transport{}}, base, connect.WithGRPCWeb()),
		}
		for proto, c := range clients {
			t.Run(name+"/"+proto, func(t *testing.T) {
				room := roomFor(t, "x")
				sse := openStream(t, base+"/stream/"+room)
				rpc := openRPCStream(t, c, &chatv1.StreamRequest{Room: room})

				sent := submitRPC(t, c, room, "alice", "over gRPC", "")
				if got := sse.messages(t, 1)[0]; got.ID != sent.Id || got.Message != "over gRPC" || got.User != "alice" || !got.Time.Equal(sent.Time.AsTime()) {
					t.Errorf("SSE got %+v, want the gRPC post %v", got, sent)
				}
				if got := rpc.next(t).GetMessage(); got.GetId() != sent.Id {
					t.Errorf("gRPC stream got %v, want its own post %q", got, sent.Id)
				}
				posted := postJSON(t, base, room, "bob", "over REST")
				if got := rpc.next(t).GetMessage(); got.GetId() != posted.ID || got.GetMessage() != "over REST" || got.GetUser() != "bob" || got.GetVerified() {
					t.Errorf("gRPC stream got %v, want the REST post %+v", got, posted)
				}

				// Resume after the first: exactly the second, no gap, no duplicate.
				back := openRPCStream(t, c, &chatv1.StreamRequest{Room: room, LastEventId: sent.Id})
				if got := back.next(t).GetMessage(); got.GetId() != posted.ID {
					t.Errorf("resumed after %s, got %v, want %s", sent.Id, got, posted.ID)
				}
				third := submitRPC(t, c, room, "alice", "live", "")
				if got := back.next(t).GetMessage(); got.GetId() != third.Id {
					t.Errorf("resumed stream went on with %v, want %s", got, third.Id)
				}

				// A foreign id: a reset naming the oldest, then everything.
				reset := openRPCStream(t, c, &chatv1.StreamRequest{Room: room, LastEventId: "nosuchepoch-1"})
				if got := reset.next(t).GetReset_(); got == nil || got.Oldest != sent.Id {
					t.Errorf("stream from a foreign id began with %v, want a reset with oldest %s", got, sent.Id)
				}
				if got := reset.next(t).GetMessage(); got.GetId() != sent.Id {
					t.Errorf("after the reset: %v, want %s", got, sent.Id)
				}

				hist, err := c.History(callCtx(t), connect.NewRequest(&chatv1.HistoryRequest{Room: room}))
				if err != nil || len(hist.Msg.Messages) != 3 || hist.Msg.Messages[1].Id != posted.ID {
					t.Errorf("History: %v %v, want the 3 messages", hist, err)
				}
				page, err := c.History(callCtx(t), connect.NewRequest(&chatv1.HistoryRequest{Room: room, Before: third.Id, Limit: 1}))
				if err != nil || len(page.Msg.Messages) != 1 || page.Msg.Messages[0].Id != posted.ID {
					t.Errorf("History before the third: %v %v, want the second, %s", page, err, posted.ID)
				}
				list, err := c.ListRooms(callCtx(t), connect.NewRequest(&chatv1.ListRoomsRequest{}))
				found := false
				for _, r := range list.Msg.GetRooms() {
					found = found || r.Name == room && r.LastId == third.Id && r.Subscribers == 4
				}
				if err != nil || !found {
					t.Errorf("ListRooms: %v %v, want %s with last id %s and 4 subscribers", list, err, room, third.Id)
				}
			})
		}
	}
}

// TestGRPCErrorCodes: refusals come back as gRPC codes with the REST API's
// messages, and a key sent over gRPC names the same message as the
// Idempotency-Key header.
func TestGRPCErrorCodes(t *testing.T) {
	startCaddy(t, grpcConfig("rooms open-room another-room\n max_message_size 100\n rate_limit 3 1m"))
	c := grpcClient(rootSite)
	room := "open-room"
	code := func(err error) connect.Code {
		if err == nil {
			return 0
		}
		return connect.CodeOf(err)
	}
	submit := func(room, user, text, key string) error {
		_, err := c.Submit(callCtx(t), connect.NewRequest(&chatv1.SubmitRequest{Room: room, User: user, Message: text, IdempotencyKey: key}))
		return err
	}
	cases := []struct {
		name string
		err  error
		want connect.Code
		text string
	}{
		{"invalid room", submit("no/slash", "a", "x", ""), connect.CodeInvalidArgument, "invalid room name"},
		{"room not allowed", submit("elsewhere", "a", "x", ""), connect.CodePermissionDenied, "not open here"},
		{"empty message", submit(room, "a", "", ""), connect.CodeInvalidArgument, "message is missing"},
		{"message too large", submit(room, "a", strings.Repeat("x", 101), ""), connect.CodeResourceExhausted, "over 100 bytes"},
		{"bad key", submit(room, "a", "x", "has space"), connect.CodeInvalidArgument, "Idempotency-Key"},
		{"delete not allowed", func() error {
			_, err := c.DeleteRoom(callCtx(t), connect.NewRequest(&chatv1.DeleteRoomRequest{Room: room}))
			return err
		}(), connect.CodePermissionDenied, "not allowed"},
		{"history of a room never made", func() error {
			_, err := c.History(callCtx(t), connect.NewRequest(&chatv1.HistoryRequest{Room: "another-room"}))
			return err
		}(), connect.CodeNotFound, "no such room"},
	}
	for _, tc := range cases {
		if code(tc.err) != tc.want || !strings.Contains(tc.err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, tc.err, tc.want, tc.text)
		}
	}

	key := "key-" + testRun.id
	first := submitRPC(t, c, room, "alice", "once", key)
	again := do(t, "POST", rootSite+"/submit", `{"room":"open-room","user":"alice","message":"once"}`, "Content-Type", ctJSON, "Idempotency-Key", key)
	if again.status != http.StatusOK || again.json["id"] != first.Id {
		t.Errorf("REST retry of a gRPC post: %d %s, want 200 with id %s", again.status, again.body, first.Id)
	}
	if err := submit(room, "alice", "another text", key); code(err) != connect.CodeFailedPrecondition {
		t.Errorf("key reused for another message: %v, want FailedPrecondition", err)
	}

	// rate_limit 3 1m: the key's one post, two more, then a refusal that
	// says when to come back.
	for range 2 {
		submitRPC(t, c, room, "alice", "more", "")
	}
	err := submit(room, "alice", "one too many", "")
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeResourceExhausted {
		t.Fatalf("past the rate limit: %v, want ResourceExhausted", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range cerr.Details() {
		if v, err := d.Value(); err == nil {
			if r, ok := v.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
	}
	if retry == nil || retry.RetryDelay.AsDuration() <= 0 || cerr.Meta().Get("Retry-After") == "" {
		t.Errorf("rate limit refusal carries retry info %v and Retry-After %q, want both", retry, cerr.Meta().Get("Retry-After"))
	}
}

// TestGRPCOff: without grpc on, the API's paths belong to the next handler.
func TestGRPCOff(t *testing.T) {
	startCaddy(t, config{options: "servers {\n protocols h1 h2 h2c\n }"})
	_, err := grpcClient(rootSite).Submit(callCtx(t), connect.NewRequest(&chatv1.SubmitRequest{Room: roomFor(t, "x"), Message: "x"}))
	if err == nil {
		t.Fatal("Submit with grpc off was answered")
	}
	resp := do(t, "POST", rootSite+"/chat.v1.ChatService/Submit", `{}`, "Content-Type", ctJSON)
	if resp.status != http.StatusNotFound || resp.body != "not chat" {
		t.Errorf("with grpc off: %d %q, want the next handler's 404", resp.status, resp.body)
	}
}

// TestGRPCStreamEnds: a deleted room ends its gRPC streams with Closed; a
// reload ends them at once with Unavailable, the code clients retry, and a
// client resuming with its last id misses nothing.
func TestGRPCStreamEnds(t *testing.T) {
	cfg := grpcConfig("allow_delete")
	startCaddy(t, cfg)
	c := grpcClient(rootSite)

	gone := roomFor(t, "deleted")
	submitRPC(t, c, gone, "alice", "hello", "")
	s := openRPCStream(t, c, &chatv1.StreamRequest{Room: gone})
	if _, err := c.DeleteRoom(callCtx(t), connect.NewRequest(&chatv1.DeleteRoomRequest{Room: gone})); err != nil {
		t.Fatalf("DeleteRoom: %v", err)
	}
	if ev := s.next(t); ev.GetClosed() == nil {
		t.Errorf("after delete: %v, want Closed", ev)
	}
	if err := s.end(t, wait); err != nil {
		t.Errorf("stream of a deleted room ended with %v, want OK", err)
	}

	room := roomFor(t, "x")
	first := submitRPC(t, c, room, "alice", "before", "")
	s = openRPCStream(t, c, &chatv1.StreamRequest{Room: room, History: 1})
	if got := s.next(t).GetMessage(); got.GetId() != first.Id {
		t.Fatalf("history 1: %v, want %s", got, first.Id)
	}
	changed := cfg
	changed.global = "heartbeat 20s" // an unchanged config is not reloaded
	reload(t, changed)
	if err := s.end(t, 2*time.Second); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("stream on reload ended with %v, want Unavailable", err)
	}
	after := submitRPC(t, c, room, "alice", "after", "")
	back := openRPCStream(t, c, &chatv1.StreamRequest{Room: room, LastEventId: first.Id})
	if got := back.next(t).GetMessage(); got.GetId() != after.Id {
		t.Errorf("resumed after the reload: %v, want %s", got, after.Id)
	}
}

// TestGRPCGoClient: google.golang.org/grpc, the reference client, over h2c:
// Submit, a stream that replays and goes on live, a refusal's code, and
// server reflection listing the service and describing it.
func TestGRPCGoClient(t *testing.T) {
	startCaddy(t, grpcConfig(""))
	conn, err := grpc.NewClient(strings.TrimPrefix(rootSite, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	room := roomFor(t, "x")
	var first chatv1.Message
	if err := conn.Invoke(callCtx(t), "/chat.v1.ChatService/Submit", &chatv1.SubmitRequest{Room: room, User: "alice", Message: "hello"}, &first); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	err = conn.Invoke(callCtx(t), "/chat.v1.ChatService/Submit", &chatv1.SubmitRequest{Room: room}, new(chatv1.Message))
	if grpcstatus.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "message is missing") {
		t.Errorf("Submit without a message: %v, want InvalidArgument", err)
	}

	stream, err := conn.NewStream(callCtx(t), &grpc.StreamDesc{ServerStreams: true}, "/chat.v1.ChatService/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&chatv1.StreamRequest{Room: room, History: 10}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var ev chatv1.StreamEvent
	if err := stream.RecvMsg(&ev); err != nil || ev.GetMessage().GetId() != first.Id {
		t.Fatalf("replay: %v %v, want %s", &ev, err, first.Id)
	}
	live := postJSON(t, rootSite, room, "bob", "live")
	if err := stream.RecvMsg(&ev); err != nil || ev.GetMessage().GetId() != live.ID || !ev.GetMessage().GetTime().AsTime().Equal(live.Time) {
		t.Errorf("live: %v %v, want %s", &ev, err, live.ID)
	}

	refl, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionv1.ServerReflectionRequest) *reflectionv1.ServerReflectionResponse {
		t.Helper()
		if err := refl.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := refl.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	list := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range list.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !slices.Contains(names, "chat.v1.ChatService") {
		t.Errorf("reflection lists %v, want chat.v1.ChatService", names)
	}
	files := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "chat.v1.ChatService"}})
	var got []string
	for _, b := range files.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(b, &fd); err != nil {
			t.Fatal(err)
		}
		got = append(got, fd.GetName())
	}
	if !slices.Equal(got, []string{"chat/v1/chat.proto", "google/protobuf/duration.proto", "google/protobuf/timestamp.proto"}) {
		t.Errorf("reflection's files for chat.v1.ChatService: %v, want chat.proto and its imports", got)
	}
}

// TestGRPCStreamsCountWithSSE: gRPC and SSE streams share a client's
// max_streams_per_client; past it a gRPC stream is refused with
// ResourceExhausted, and a slot given back by a gRPC stream is free again.
func TestGRPCStreamsCountWithSSE(t *testing.T) {
	startCaddy(t, grpcConfig("max_streams_per_client 2"))
	c := grpcClient(rootSite)
	room := roomFor(t, "x")
	sse := openStream(t, rootSite+"/stream/"+room)
	rpc := openRPCStream(t, c, &chatv1.StreamRequest{Room: room})
	stream, err := c.Stream(callCtx(t), connect.NewRequest(&chatv1.StreamRequest{Room: room}))
	if err == nil {
		stream.Receive()
		err = stream.Err()
		stream.Close()
	}
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "2 streams open") {
		t.Errorf("third stream: %v, want ResourceExhausted", err)
	}
	if resp := getStream(t, rootSite+"/stream/"+room); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("SSE stream past the limit: %d, want 429", resp.StatusCode)
	}
	rpc.cancel()
	if err := rpc.end(t, wait); connect.CodeOf(err) != connect.CodeCanceled {
		t.Errorf("canceled stream ended with %v", err)
	}
	sent := submitRPC(t, c, room, "alice", "hello", "")
	deadline := time.Now().Add(wait)
	for {
		again, err := c.Stream(callCtx(t), connect.NewRequest(&chatv1.StreamRequest{Room: room, History: 1}))
		if err == nil {
			ok := again.Receive() && again.Msg().GetMessage().GetId() == sent.Id
			err = again.Err()
			again.Close()
			if ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream slot given back by a gRPC stream was not free again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sse.close()
}

// tlsSite is a Caddyfile with one HTTPS site serving the gRPC API, its
// certificate from Caddy's internal CA, beside the plain-HTTP root site
// (HTTP/1.1 and h2c) of the other tests: both serve the same rooms. global
// and handler are the chat app's options and both handlers' subdirectives.
type tlsSite struct{ port, global, handler string }

func (c tlsSite) String() string {
	return fmt.Sprintf(`{
	%s
	servers {
		protocols h1 h2 h2c
	}
	chat {
		%s
	}
}
https://localhost:%s {
	tls internal
	chat {
		grpc on
		%s
	}
}
%s {
	handle /metrics {
		metrics
	}
	chat {
		grpc on
		%s
		%s
	}
}
`, testGlobals(), c.global, c.port, c.handler, rootSite, manyRooms, c.handler)
}

// tlsConf is a client's TLS config for a tlsSite: Caddy's internal CA is
// not trusted here.
var tlsConf = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}

// waitForCert waits until the tlsSite on port has the certificate Caddy
// obtains in the background.
func waitForCert(t *testing.T, port string) {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", "localhost:"+port, tlsConf)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for the HTTPS site: %v", err)
		}
	}
}

// TestGRPCOverTLS: google.golang.org/grpc over TLS (HTTP/2 by ALPN) posts
// and streams on an HTTPS site.
func TestGRPCOverTLS(t *testing.T) {
	port := freePort()
	startCaddy(t, tlsSite{port: port})
	waitForCert(t, port)
	creds := credentials.NewTLS(tlsConf)
	conn, err := grpc.NewClient("localhost:"+port, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	room := roomFor(t, "x")
	stream, err := conn.NewStream(callCtx(t), &grpc.StreamDesc{ServerStreams: true}, "/chat.v1.ChatService/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&chatv1.StreamRequest{Room: room}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // the stream is open
		t.Fatal(err)
	}
	var sent chatv1.Message
	if err := conn.Invoke(callCtx(t), "/chat.v1.ChatService/Submit", &chatv1.SubmitRequest{Room: room, User: "alice", Message: "over TLS"}, &sent); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	var ev chatv1.StreamEvent
	if err := stream.RecvMsg(&ev); err != nil || ev.GetMessage().GetId() != sent.Id || ev.GetMessage().GetMessage() != "over TLS" {
		t.Errorf("stream over TLS: %v %v, want %s", &ev, err, sent.Id)
	}
}

// TestGRPCStreamsLeaveNoGoroutine: gRPC streams that end, by the client
// leaving or the room's deletion, and refused calls leave no goroutine behind.
func TestGRPCStreamsLeaveNoGoroutine(t *testing.T) {
	startCaddy(t, grpcConfig("allow_delete"))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	c := chatv1connect.NewChatServiceClient(&http.Client{Transport: tr}, rootSite, connect.WithGRPC())
	room, doomed := roomFor(t, "a"), roomFor(t, "b")
	warm := openRPCStream(t, c, &chatv1.StreamRequest{Room: room})
	submitRPC(t, c, room, "alice", "warm up", "")
	warm.next(t)
	warm.cancel()
	warm.end(t, wait)
	tr.CloseIdleConnections()
	baseline := goleak.IgnoreCurrent()

	var streams []*rpcStream
	for i := range 20 {
		target := room
		if i%2 == 0 {
			target = doomed
		}
		streams = append(streams, openRPCStream(t, c, &chatv1.StreamRequest{Room: target}))
	}
	submitRPC(t, c, room, "alice", "hello", "")
	if _, err := c.DeleteRoom(callCtx(t), connect.NewRequest(&chatv1.DeleteRoomRequest{Room: doomed})); err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		if i%2 == 0 {
			s.end(t, wait)
		} else {
			s.next(t)
			s.cancel()
			s.end(t, wait)
		}
	}
	for range 10 {
		if _, err := c.Submit(callCtx(t), connect.NewRequest(&chatv1.SubmitRequest{Room: "bad/name", Message: "x"})); err == nil {
			t.Fatal("a bad room name was accepted")
		}
	}
	tr.CloseIdleConnections()
	goleak.VerifyNone(t, baseline)
}

// BenchmarkGRPCDelivery is what the gRPC adapter spends on a message beyond
// an SSE stream: making its stream event and marshalling it, once per
// message (rpcEvents), not once per reader.
func BenchmarkGRPCDelivery(b *testing.B) {
	msg := rooms.Message{ID: "abc-123", Room: "lobby", User: "alice", Message: strings.Repeat("x", 100), Time: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if ev := rpcEvents.Encode(rooms.MessageEvent(msg)); ev.encoded == nil {
			b.Fatal("event not marshalled")
		}
	}
}

// TestRPCEvents: each kind of event becomes its stream event, marshalled
// once and shared by every stream that sends it.
func TestRPCEvents(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	msg := rooms.Message{ID: "e-7", Room: "r", User: "u", Message: "two\nlines: data: x", Time: when, Verified: true}
	tests := []struct {
		name  string
		event *rooms.Event
		check func(*chatv1.StreamEvent) bool
	}{
		{"message", rooms.MessageEvent(msg), func(ev *chatv1.StreamEvent) bool {
			m := ev.GetMessage()
			return m.GetId() == msg.ID && m.GetMessage() == msg.Message && m.GetTime().AsTime().Equal(when) && m.GetVerified()
		}},
		{"reset", &rooms.Event{Kind: rooms.EventReset, Oldest: "e-3"}, func(ev *chatv1.StreamEvent) bool { return ev.GetReset_().GetOldest() == "e-3" }},
		{"close", rooms.CloseEvent, func(ev *chatv1.StreamEvent) bool { return ev.GetClosed() != nil }},
		{"presence", &rooms.Event{Kind: rooms.EventPresence, Presence: rooms.PresenceChange{Joined: []string{"ann"}, Left: []string{"bo"}}}, func(ev *chatv1.StreamEvent) bool {
			p := ev.GetPresence()
			return slices.Equal(p.GetJoined(), []string{"ann"}) && slices.Equal(p.GetLeft(), []string{"bo"})
		}},
		{"edited message", rooms.MessageEvent(rooms.Message{ID: "e-7", Message: "new", Time: when, Edited: when.Add(time.Minute)}), func(ev *chatv1.StreamEvent) bool {
			return ev.GetMessage().GetEdited().AsTime().Equal(when.Add(time.Minute))
		}},
		{"edit", rooms.MessageEvent(rooms.Message{ID: "e-8", Action: rooms.ActionEdit, Target: "e-7", Message: "new", Time: when}), func(ev *chatv1.StreamEvent) bool {
			e := ev.GetEdit()
			return e.GetId() == "e-8" && e.GetTarget() == "e-7" && e.GetMessage() == "new" && e.GetTime().AsTime().Equal(when)
		}},
		{"delete", rooms.MessageEvent(rooms.Message{ID: "e-9", Action: rooms.ActionDelete, Target: "e-7", ByModerator: true, Time: when}), func(ev *chatv1.StreamEvent) bool {
			d := ev.GetDelete()
			return d.GetId() == "e-9" && d.GetTarget() == "e-7" && d.GetBy() == "moderator" && d.GetTime().AsTime().Equal(when)
		}},
	}
	for _, tc := range tests {
		ev := rpcEvents.Encode(tc.event)
		var back chatv1.StreamEvent
		if err := proto.Unmarshal(ev.encoded, &back); err != nil || !tc.check(&back) || !tc.check(ev.StreamEvent) {
			t.Errorf("%s: sent as %v (%v), made %v", tc.name, &back, err, ev.StreamEvent)
		}
		if rpcEvents.Encode(tc.event) != ev {
			t.Errorf("%s: a second stream got another stream event, want the one made first", tc.name)
		}
	}
}

// TestProtoCodec: a shared event goes out as its one encoding, copied into
// the buffer connect hands the codec, so that nothing written to one
// stream's buffer reaches another's; any other message is encoded as
// connect's own codec encodes it, and decodes back.
func TestProtoCodec(t *testing.T) {
	ev := rpcEvent(rooms.Message{ID: "e-1", Room: "r", Message: "hi", Time: time.Now()})
	want, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	shared := &sharedEvent{StreamEvent: ev, encoded: slices.Clone(want)}
	tests := []struct {
		name string
		msg  any
	}{
		{"shared event", shared},
		{"shared event without its encoding", &sharedEvent{StreamEvent: ev}},
		{"event", ev},
	}
	const prefix = "envelope"
	for _, tc := range tests {
		got, err := protoCodec{}.MarshalAppend([]byte(prefix), tc.msg)
		if err != nil || string(got[:len(prefix)]) != prefix || !bytes.Equal(got[len(prefix):], want) {
			t.Errorf("%s: %x, %v; want %q then %x", tc.name, got, err, prefix, want)
			continue
		}
		var back chatv1.StreamEvent
		if err := (protoCodec{}).Unmarshal(got[len(prefix):], &back); err != nil || back.GetMessage().GetId() != "e-1" {
			t.Errorf("%s: decoded %v, %v", tc.name, &back, err)
		}
		clear(got)
	}
	if !bytes.Equal(shared.encoded, want) {
		t.Error("writing to a marshalled message changed the shared encoding")
	}
	if _, err := (protoCodec{}).Marshal("not a message"); err == nil {
		t.Error("a string was marshalled, want an error")
	}
}

// TestGRPCSlowReader: a gRPC client that stops reading, over h2c and over
// TLS, is evicted as a slow SSE reader is. HTTP/2 flow control holds the
// server's writes once the client's stream window (grpc-go's smallest, 64
// KiB) is full; the room queues for the stalled stream until its buffer is
// full and evicts it, and the server ends the stream while the client still
// reads nothing: its stuck write fails at the write timeout. Readers in the
// same room, over gRPC on h2c and TLS and over SSE, receive every message.
func TestGRPCSlowReader(t *testing.T) {
	const (
		messages = 100
		size     = 8 << 10
	)
	port := freePort()
	startCaddy(t, tlsSite{port: port, global: "buffer 16", handler: "max_message_size 16KiB"})
	waitForCert(t, port)
	h2c := strings.TrimPrefix(rootSite, "http://")
	dial := func(addr string, creds credentials.TransportCredentials, opts ...grpc.DialOption) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// The whole test, stalls included, has this long.
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout+6*wait)
	defer cancel()
	open := func(conn *grpc.ClientConn, req *chatv1.StreamRequest) grpc.ClientStream {
		t.Helper()
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/chat.v1.ChatService/Stream")
		if err == nil {
			err = stream.SendMsg(req)
		}
		if err == nil {
			err = stream.CloseSend()
		}
		if err != nil {
			t.Fatal(err)
		}
		return stream
	}

	room := roomFor(t, "slow")
	body := strings.Repeat("x", size)
	first := postJSON(t, rootSite, room, "alice", body)
	tiny := grpc.WithInitialWindowSize(64 << 10)
	stalled := map[string]grpc.ClientStream{
		"h2c": open(dial(h2c, insecure.NewCredentials(), tiny), &chatv1.StreamRequest{Room: room, History: 1}),
		"tls": open(dial("localhost:"+port, credentials.NewTLS(tlsConf), tiny), &chatv1.StreamRequest{Room: room, History: 1}),
	}
	for name, s := range stalled {
		var ev chatv1.StreamEvent
		if err := s.RecvMsg(&ev); err != nil || ev.GetMessage().GetId() != first.ID {
			t.Fatalf("%s stalled stream before stalling: %v %v", name, &ev, err)
		}
	}
	// From here on, the stalled clients read nothing.
	readers := map[string]grpc.ClientStream{
		"h2c": open(dial(h2c, insecure.NewCredentials()), &chatv1.StreamRequest{Room: room}),
		"tls": open(dial("localhost:"+port, credentials.NewTLS(tlsConf)), &chatv1.StreamRequest{Room: room}),
	}
	for name, s := range readers {
		if _, err := s.Header(); err != nil {
			t.Fatalf("%s reader: %v", name, err)
		}
	}
	sse := openStream(t, rootSite+"/stream/"+room)
	evictionsBefore := metric(t, "caddy_chat_evictions_total")

	// The readers read as the messages come.
	var wg sync.WaitGroup
	read := make(map[string][]string)
	failed := make(map[string]error)
	var mu sync.Mutex
	for name, s := range readers {
		wg.Go(func() {
			var got []string
			var err error
			for range messages {
				var ev chatv1.StreamEvent
				if err = s.RecvMsg(&ev); err != nil {
					break
				}
				got = append(got, ev.GetMessage().GetId())
			}
			mu.Lock()
			read[name], failed[name] = got, err
			mu.Unlock()
		})
	}
	var posted []rooms.Message
	for i := range messages {
		posted = append(posted, postJSON(t, rootSite, room, "alice", fmt.Sprintf("%d %s", i, body)))
	}
	want := ids(posted)
	if got := ids(sse.messages(t, messages)); got != want {
		t.Error("the SSE reader missed or reordered messages")
	}
	wg.Wait() // each read has the test's deadline
	for name := range readers {
		if got := strings.Join(read[name], ","); got != want || failed[name] != nil {
			t.Errorf("%s reader: %d messages, error %v; want all %d in order", name, len(read[name]), failed[name], messages)
		}
	}
	if got := metric(t, "caddy_chat_evictions_total") - evictionsBefore; got != 2 {
		t.Errorf("%v evictions, want the 2 stalled streams", got)
	}

	// The server ends the stalled streams while their clients read
	// nothing: the room counts the 3 readers only.
	c := grpcClient(rootSite)
	deadline := time.Now().Add(writeTimeout + 2*wait)
	for subscribers := -1; subscribers != 3; time.Sleep(50 * time.Millisecond) {
		list, err := c.ListRooms(callCtx(t), connect.NewRequest(&chatv1.ListRoomsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list.Msg.GetRooms() {
			if r.Name == room {
				subscribers = int(r.Subscribers)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the room has %d subscribers %v after the stalls began, want the 3 readers", subscribers, writeTimeout+2*wait)
		}
	}
	// What a stalled client then reads: what the window held, in order,
	// and the end, before the test's deadline.
	for name, s := range stalled {
		var got []string
		var err error
		for {
			var ev chatv1.StreamEvent
			if err = s.RecvMsg(&ev); err != nil {
				break
			}
			got = append(got, ev.GetMessage().GetId())
		}
		if code := grpcstatus.Code(err); err == io.EOF || code == codes.DeadlineExceeded || code == codes.OK {
			t.Errorf("%s stalled stream ended with %v, want an error from the server", name, err)
		}
		if len(got) >= messages || strings.Join(got, ",") != ids(posted[:len(got)]) {
			t.Errorf("%s stalled stream read %d messages after its stall, want fewer than %d, in order", name, len(got), messages)
		}
		t.Logf("%s stalled stream: %d messages, then %v", name, len(got), err)
	}
}
