package chat

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
	"github.com/caddy-chat/caddy-chat/proto/chat/v1/chatv1connect"
)

// TestAllowOrigins: with allow_origins, a page of an allowed origin may
// preflight, post, read history and open a stream, and is told so by an
// exact Access-Control-Allow-Origin; any other origin is answered as
// before, and its cross-site posts are refused. Without allow_origins,
// nothing changes: no CORS headers, preflights are 405, cross-site posts
// 403.
func TestAllowOrigins(t *testing.T) {
	const allowed, other = "https://example.com", "https://evil.example"
	crossSite := func(origin string) []string {
		return []string{"Origin", origin, "Sec-Fetch-Site", "cross-site", "Content-Type", "application/json"}
	}
	preflight := func(origin string) []string {
		return []string{"Origin", origin, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "content-type,idempotency-key"}
	}
	body := `{"user":"ann","message":"from afar"}`

	t.Run("on", func(t *testing.T) {
		startCaddy(t, config{handler: "allow_origins " + allowed + " https://other.example:8443"})
		room := roomFor(t, "cors")
		pre := do(t, "OPTIONS", rootSite+"/room/"+room, "", preflight(allowed)...)
		if pre.status != http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != allowed {
			t.Fatalf("preflight: %d, Allow-Origin %q", pre.status, pre.header.Get("Access-Control-Allow-Origin"))
		}
		for _, h := range []string{"Content-Type", "Idempotency-Key", "Last-Event-ID"} {
			if !strings.Contains(pre.header.Get("Access-Control-Allow-Headers"), h) {
				t.Errorf("preflight allows headers %q, want %s among them", pre.header.Get("Access-Control-Allow-Headers"), h)
			}
		}
		if !strings.Contains(pre.header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("preflight allows methods %q, want POST", pre.header.Get("Access-Control-Allow-Methods"))
		}
		if pre.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Error("preflight allows credentials")
		}

		post := do(t, "POST", rootSite+"/room/"+room, body, crossSite(allowed)...)
		if post.status != http.StatusCreated || post.header.Get("Access-Control-Allow-Origin") != allowed ||
			!strings.Contains(strings.Join(post.header.Values("Vary"), ","), "Origin") {
			t.Fatalf("post from %s: %d %s, headers %v", allowed, post.status, post.body, post.header)
		}
		hist := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "", "Origin", allowed)
		if hist.status != http.StatusOK || hist.header.Get("Access-Control-Allow-Origin") != allowed {
			t.Errorf("history for %s: %d, Allow-Origin %q", allowed, hist.status, hist.header.Get("Access-Control-Allow-Origin"))
		}
		s := openStream(t, rootSite+"/stream/"+room+"?history=1", "Origin", allowed)
		if got := s.resp.Header.Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("stream for %s: Allow-Origin %q", allowed, got)
		}
		if got := s.messages(t, 1); got[0].Message != "from afar" {
			t.Errorf("stream for %s replays %+v", allowed, got)
		}
		s.close()

		for _, origin := range []string{other, "https://example.com:444", "http://example.com"} {
			pre := do(t, "OPTIONS", rootSite+"/room/"+room, "", preflight(origin)...)
			post := do(t, "POST", rootSite+"/room/"+room, body, crossSite(origin)...)
			if pre.status == http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != "" ||
				post.status != http.StatusForbidden || post.header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s: preflight %d %v; post %d %v", origin, pre.status, pre.header, post.status, post.header)
			}
		}
	})

	t.Run("off", func(t *testing.T) {
		startCaddy(t, config{})
		room := roomFor(t, "cors")
		pre := do(t, "OPTIONS", rootSite+"/room/"+room, "", preflight(allowed)...)
		post := do(t, "POST", rootSite+"/room/"+room, body, crossSite(allowed)...)
		hist := do(t, "GET", rootSite+"/rooms/"+room+"/messages", "", "Origin", allowed)
		for name, r := range map[string]response{"preflight": pre, "post": post, "history": hist} {
			if r.header.Get("Access-Control-Allow-Origin") != "" || len(r.header.Values("Vary")) != 0 {
				t.Errorf("%s without allow_origins: headers %v", name, r.header)
			}
		}
		if pre.status != http.StatusMethodNotAllowed || post.status != http.StatusForbidden {
			t.Errorf("without allow_origins: preflight %d, cross-site post %d; want 405 and 403", pre.status, post.status)
		}
	})
}

// TestAllowOriginsInvalid: an origin with a path, or without a scheme, is
// refused when the config loads, and says which.
func TestAllowOriginsInvalid(t *testing.T) {
	for _, origin := range []string{"https://example.com/chat", "example.com"} {
		err := loadCaddyfile(config{handler: "allow_origins " + origin}.String())
		if err == nil || !strings.Contains(err.Error(), "allow_origins") {
			t.Errorf("allow_origins %s: %v, want a refusal naming allow_origins", origin, err)
		}
	}
}

// originTransport sends every request as a page of origin would from a
// browser, and keeps the last response's headers.
type originTransport struct {
	origin string
	base   http.RoundTripper

	mu   sync.Mutex
	last http.Header
}

func (o *originTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Origin", o.origin)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := o.base.RoundTrip(r)
	if err == nil {
		o.mu.Lock()
		o.last = resp.Header.Clone()
		o.mu.Unlock()
	}
	return resp, err
}

func (o *originTransport) header() http.Header {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// TestAllowOriginsRPC: a page of an allowed origin may call the gRPC API
// with gRPC-Web or the Connect protocol, as it may the REST API: preflights
// allow the headers their clients send, answers expose the call's status,
// and a submit passes the cross-site check. Any other origin, and every
// origin without allow_origins, gets no CORS answer and its submits are
// refused with PermissionDenied.
func TestAllowOriginsRPC(t *testing.T) {
	const allowed, other = "https://example.com", "https://evil.example"
	rpcHeaders := []string{"Content-Type", "Connect-Protocol-Version", "Connect-Timeout-Ms", "Grpc-Timeout", "X-Grpc-Web", "X-User-Agent"}
	exposed := []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"}
	preflight := func(origin string) response {
		return do(t, "OPTIONS", rootSite+"/chat.v1.ChatService/Submit", "", "Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", strings.ToLower(strings.Join(rpcHeaders, ",")))
	}
	clients := func(origin string) map[string]*originTransport {
		return map[string]*originTransport{
			"connect": {origin: origin, base: &http.Transport{}},
			"grpcweb": {origin: origin, base: &http.Transport{}},
		}
	}
	rpc := func(name string, tr *originTransport) chatv1connect.ChatServiceClient {
		opts := []connect.ClientOption{}
		if name == "grpcweb" {
			opts = append(opts, connect.WithGRPCWeb())
		}
		return chatv1connect.NewChatServiceClient(&http.Client{Transport: tr}, rootSite, opts...)
	}
	submit := func(c chatv1connect.ChatServiceClient, room string) (*chatv1.Message, error) {
		resp, err := c.Submit(callCtx(t), connect.NewRequest(&chatv1.SubmitRequest{Room: room, User: "ann", Message: "from afar"}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}

	t.Run("on", func(t *testing.T) {
		startCaddy(t, grpcConfig("allow_origins "+allowed))
		pre := preflight(allowed)
		if pre.status != http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != allowed ||
			!strings.Contains(pre.header.Get("Access-Control-Allow-Methods"), "POST") || pre.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("preflight: %d, headers %v", pre.status, pre.header)
		}
		for _, h := range rpcHeaders {
			if !strings.Contains(pre.header.Get("Access-Control-Allow-Headers"), h) {
				t.Errorf("preflight allows headers %q, want %s among them", pre.header.Get("Access-Control-Allow-Headers"), h)
			}
		}
		for name, tr := range clients(allowed) {
			c := rpc(name, tr)
			room := roomFor(t, "cors")
			sse := openStream(t, rootSite+"/stream/"+room)
			stream := openRPCStream(t, c, &chatv1.StreamRequest{Room: room})
			sent, err := submit(c, room)
			if err != nil {
				t.Fatalf("%s Submit from %s: %v", name, allowed, err)
			}
			hdr := tr.header()
			if hdr.Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(strings.Join(hdr.Values("Vary"), ","), "Origin") {
				t.Errorf("%s Submit from %s: headers %v", name, allowed, hdr)
			}
			for _, h := range exposed {
				if !strings.Contains(hdr.Get("Access-Control-Expose-Headers"), h) {
					t.Errorf("%s Submit exposes %q, want %s among them", name, hdr.Get("Access-Control-Expose-Headers"), h)
				}
			}
			if got := sse.messages(t, 1)[0]; got.ID != sent.Id || got.Verified {
				t.Errorf("%s: SSE got %+v, want %s, unverified", name, got, sent.Id)
			}
			if got := stream.next(t).GetMessage(); got.GetId() != sent.Id {
				t.Errorf("%s stream from %s got %v, want %s", name, allowed, got, sent.Id)
			}
		}

		pre = preflight(other)
		if pre.status == http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from %s: %d, headers %v", other, pre.status, pre.header)
		}
		for name, tr := range clients(other) {
			_, err := submit(rpc(name, tr), roomFor(t, "cors"))
			if connect.CodeOf(err) != connect.CodePermissionDenied || tr.header().Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s Submit from %s: %v, headers %v; want PermissionDenied without CORS", name, other, err, tr.header())
			}
		}
	})

	t.Run("off", func(t *testing.T) {
		startCaddy(t, grpcConfig(""))
		pre := preflight(allowed)
		if pre.status == http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != "" || len(pre.header.Values("Vary")) != 0 {
			t.Errorf("preflight without allow_origins: %d, headers %v", pre.status, pre.header)
		}
		for name, tr := range clients(allowed) {
			_, err := submit(rpc(name, tr), roomFor(t, "cors"))
			if connect.CodeOf(err) != connect.CodePermissionDenied || tr.header().Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s Submit without allow_origins: %v, headers %v; want PermissionDenied without CORS", name, err, tr.header())
			}
		}
	})
}
