package chat

import (
	"net/http"
	"strings"
	"testing"
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
