package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
)

// TestXNet: -xnet changes which HTTP/2 server runs the handler, which is
// all a comparison with it rests on: the handler's own stack names the
// package that called it.
func TestXNet(t *testing.T) {
	for _, tt := range []struct {
		xnet bool
		want string
	}{
		{false, "net/http.(*http2serverConn).runHandler"},
		{true, "golang.org/x/net/http2.(*serverConn).runHandler"},
	} {
		stacks := make(chan string, 1)
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			stacks <- string(debug.Stack())
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		go func() { t.Log(serve(addr, "h2", tt.xnet, handler)) }()

		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		}}
		var resp *http.Response
		for range 50 { // until it listens
			if resp, err = client.Get("https://" + addr + "/"); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("-xnet=%v: served over %s, want HTTP/2", tt.xnet, resp.Proto)
		}
		if stack := <-stacks; !strings.Contains(stack, tt.want) {
			t.Errorf("-xnet=%v: the handler was not run by %s:\n%s", tt.xnet, tt.want, stack)
		}
	}
}

// TestGRPCStreamsSubmittedMessages: a grpc-go client following a room over
// -grpc receives what is posted to it, through POST /submit as chatbench
// publishes and through the Submit call, in order and as the author was
// answered.
func TestGRPCStreamsSubmittedMessages(t *testing.T) {
	h := newHub(256)
	web := httptest.NewServer(h.routes())
	defer web.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { t.Log(serveGRPC(ln, h)) }()

	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/chat.v1.ChatService/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&chatv1.StreamRequest{Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // subscribed
		t.Fatal(err)
	}

	resp, err := http.Post(web.URL+"/submit", "application/json", strings.NewReader(`{"room":"lobby","user":"alice","message":"over HTTP"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /submit: %s", resp.Status)
	}
	answer := new(chatv1.Message)
	if err := conn.Invoke(ctx, "/chat.v1.ChatService/Submit", &chatv1.SubmitRequest{Room: "lobby", User: "bob", Message: "over gRPC"}, answer); err != nil {
		t.Fatal(err)
	}

	for i, want := range []*chatv1.Message{
		{Id: h.epoch + "-1", Room: "lobby", User: "alice", Message: "over HTTP"},
		{Id: h.epoch + "-2", Room: "lobby", User: "bob", Message: "over gRPC"},
	} {
		ev := new(chatv1.StreamEvent)
		if err := stream.RecvMsg(ev); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		got := ev.GetMessage()
		if got.GetId() != want.Id || got.GetRoom() != want.Room || got.GetUser() != want.User || got.GetMessage() != want.Message {
			t.Errorf("message %d streamed as %v, want %v", i+1, got, want)
		}
		if got.GetTime().AsTime().IsZero() {
			t.Errorf("message %d streamed without its time", i+1)
		}
	}
	if answer.GetId() != h.epoch+"-2" || answer.GetMessage() != "over gRPC" {
		t.Errorf("Submit answered %v, want the message as streamed", answer)
	}
}
