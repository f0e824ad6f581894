package chat

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// grpcurl returns the path of grpcurl, the gRPC client that users reach for
// first: the one CHAT_GRPCURL names (test.sh and CI install it there), else
// the one on PATH. Without it the test fails: it is part of what the API
// promises.
func grpcurl(t *testing.T) string {
	t.Helper()
	if path := os.Getenv("CHAT_GRPCURL"); path != "" {
		return path
	}
	path, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Fatal("grpcurl not found: ./test.sh installs it, or set CHAT_GRPCURL to its path")
	}
	return path
}

// runGrpcurl runs grpcurl with args and returns its output, failing the test
// if it fails or takes longer than wait.
func runGrpcurl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, grpcurl(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// grpcurlEvent is a stream event as grpcurl prints it: protobuf's JSON.
type grpcurlEvent struct {
	Message *struct {
		ID      string `json:"id"`
		User    string `json:"user"`
		Message string `json:"message"`
	} `json:"message"`
}

// TestGrpcurl: grpcurl, over h2c (-plaintext) and TLS (-insecure, Caddy's
// internal CA), finds the service by reflection, describes it, posts with
// Submit and follows a room with Stream; what it posts reaches an SSE
// stream of the same room with the same id.
func TestGrpcurl(t *testing.T) {
	port := freePort()
	startCaddy(t, tlsSite{port: port})
	waitForCert(t, port)
	for _, tc := range []struct {
		name string
		flag string
		addr string
	}{
		{"h2c", "-plaintext", strings.TrimPrefix(rootSite, "http://")},
		{"tls", "-insecure", "localhost:" + port},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := runGrpcurl(t, tc.flag, tc.addr, "list")
			if !strings.Contains(list, "chat.v1.ChatService\n") {
				t.Errorf("grpcurl list: %q, want chat.v1.ChatService", list)
			}
			desc := runGrpcurl(t, tc.flag, tc.addr, "describe", "chat.v1.ChatService")
			for _, rpc := range []string{
				"rpc Submit ( .chat.v1.SubmitRequest ) returns ( .chat.v1.Message );",
				"rpc Stream ( .chat.v1.StreamRequest ) returns ( stream .chat.v1.StreamEvent );",
				"rpc EditMessage ( .chat.v1.EditMessageRequest ) returns ( .chat.v1.Edit );",
				"rpc DeleteMessage ( .chat.v1.DeleteMessageRequest ) returns ( .chat.v1.Delete );",
				"rpc Ban ( .chat.v1.BanRequest ) returns ( .chat.v1.BanInfo );",
				"rpc Unban ( .chat.v1.UnbanRequest ) returns ( .chat.v1.UnbanResponse );",
				"rpc ListBans ( .chat.v1.ListBansRequest ) returns ( .chat.v1.ListBansResponse );",
			} {
				if !strings.Contains(desc, rpc) {
					t.Errorf("grpcurl describe: %q, want %q in it", desc, rpc)
				}
			}

			room := roomFor(t, "curl")
			before := postJSON(t, rootSite, room, "bob", "before")
			sse := openStream(t, rootSite+"/stream/"+room)
			events := grpcurlStream(t, tc.flag, tc.addr, `{"room":"`+room+`","history":1}`)
			if ev := nextGrpcurlEvent(t, events); ev.Message == nil || ev.Message.ID != before.ID {
				t.Fatalf("grpcurl Stream began with %+v, want the replay of %s", ev, before.ID)
			}

			out := runGrpcurl(t, tc.flag, "-d", `{"room":"`+room+`","user":"alice","message":"from grpcurl"}`,
				tc.addr, "chat.v1.ChatService/Submit")
			var sent struct {
				ID      string `json:"id"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(out), &sent); err != nil || sent.ID == "" || sent.Message != "from grpcurl" {
				t.Fatalf("grpcurl Submit: %v %q", err, out)
			}
			if got := sse.messages(t, 1)[0]; got.ID != sent.ID || got.Message != "from grpcurl" || got.User != "alice" {
				t.Errorf("SSE got %+v, want grpcurl's post %s", got, sent.ID)
			}
			if ev := nextGrpcurlEvent(t, events); ev.Message == nil || ev.Message.ID != sent.ID {
				t.Errorf("grpcurl Stream got %+v, want %s", ev, sent.ID)
			}
		})
	}
}

// grpcurlStream runs grpcurl's Stream call with the request req and returns
// the events it prints. The test's end stops it.
func grpcurlStream(t *testing.T, flag, addr, req string) <-chan grpcurlEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, grpcurl(t), flag, "-d", req, addr, "chat.v1.ChatService/Stream")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	events := make(chan grpcurlEvent, 10)
	go func() {
		defer close(events)
		dec := json.NewDecoder(stdout)
		for {
			var ev grpcurlEvent
			if err := dec.Decode(&ev); err != nil {
				return // the test sees the stream end
			}
			events <- ev
		}
	}()
	return events
}

func nextGrpcurlEvent(t *testing.T, events <-chan grpcurlEvent) grpcurlEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("grpcurl's stream ended")
		}
		return ev
	case <-time.After(wait):
		t.Fatal("no event from grpcurl's stream")
	}
	return grpcurlEvent{}
}
