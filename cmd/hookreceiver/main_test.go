package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/hooks"
)

// TestCountsVerifiedCalls: signed batches count their events, a signed
// screen call is allowed, and a call signed with another secret is refused
// 401 and counted apart, as a benchmark's reader relies on /count for.
func TestCountsVerifiedCalls(t *testing.T) {
	secret := mustSecret(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	other := mustSecret(t, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
	srv := httptest.NewServer(newReceiver(secret).routes())
	defer srv.Close()

	post := func(s hooks.Secret, path, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		s.SetHeaders(req.Header, hooks.NewID(), time.Now(), []byte(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	batch := `{"events":[{"type":"message","room":"lobby","id":"a-1"},{"type":"message","room":"lobby","id":"a-2"}]}`
	for range 2 {
		if resp := post(secret, "/webhook", batch); resp.StatusCode != http.StatusNoContent {
			t.Errorf("a signed batch: %s, want 204", resp.Status)
		}
	}
	if resp := post(other, "/webhook", batch); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a batch signed with another secret: %s, want 401", resp.Status)
	}
	resp := post(secret, "/screen", `{"kind":"post","room":"lobby","user":"sam","message":"hello"}`)
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(answer) != `{"action":"allow"}` {
		t.Errorf("a signed screen call: %s %s, want 200 {\"action\":\"allow\"}", resp.Status, answer)
	}

	got, err := http.Get(srv.URL + "/count")
	if err != nil {
		t.Fatal(err)
	}
	defer got.Body.Close()
	var c counts
	if err := json.NewDecoder(got.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if want := (counts{Events: 4, Batches: 2, Screened: 1, Rejected: 1}); c != want {
		t.Errorf("GET /count: %+v, want %+v", c, want)
	}
}

func mustSecret(t *testing.T, s string) hooks.Secret {
	t.Helper()
	secret, err := hooks.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}
