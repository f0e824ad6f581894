package hooks

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks reference vector: the test "TestWebhookSign" in
// libraries/go/webhook_test.go of github.com/standard-webhooks/standard-webhooks
// (the same vector is in its JavaScript, Python and Rust libraries).
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignMatchesTheStandardWebhooksVector(t *testing.T) {
	s, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody)); got != vectorSignature {
		t.Errorf("signature %s, want %s", got, vectorSignature)
	}
}

func TestVerifyTheStandardWebhooksVector(t *testing.T) {
	s, _ := ParseSecret(vectorSecret)
	at := time.Unix(vectorTimestamp, 0)
	headers := func(signature string) http.Header {
		h := http.Header{}
		h.Set(HeaderID, vectorID)
		h.Set(HeaderTimestamp, "1614265330")
		h.Set(HeaderSignature, signature)
		return h
	}
	other := "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
	for _, c := range []struct {
		name string
		h    http.Header
		body string
		now  time.Time
		want error
	}{
		{"as signed", headers(vectorSignature), vectorBody, at, nil},
		{"within tolerance", headers(vectorSignature), vectorBody, at.Add(Tolerance - time.Second), nil},
		{"among rotated signatures", headers(other + " v1a,abc " + vectorSignature), vectorBody, at, nil},
		{"body changed", headers(vectorSignature), `{"test": 2432232315}`, at, ErrBadSignature},
		{"wrong signature", headers(other), vectorBody, at, ErrBadSignature},
		{"replayed late", headers(vectorSignature), vectorBody, at.Add(Tolerance + time.Second), ErrStale},
		{"from the future", headers(vectorSignature), vectorBody, at.Add(-Tolerance - time.Second), ErrStale},
		{"unsigned", http.Header{}, vectorBody, at, ErrMissingHeaders},
	} {
		if err := s.Verify(c.h, []byte(c.body), c.now); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestParseSecretTakesOnlyTheSpecsForm(t *testing.T) {
	for _, bad := range []string{
		"",
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",    // bare base64: could be a password
		"correct horse battery staple",        // a password
		"whsec_not base64!",                   // not base64
		"whsec_c2hvcnQ=",                      // 5 bytes, under 24
		"whsec_" + strings.Repeat("AAAA", 22), // 66 bytes, over 64
	} {
		if _, err := ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) succeeded", bad)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s, _ := ParseSecret(vectorSecret)
	in := struct{ Secret Secret }{s}
	if shown := fmt.Sprintf("%v %+v %#v %s", s, in, in, s); strings.Count(shown, "whsec_(redacted)") != 4 {
		t.Errorf("secret shown as %q", shown)
	}
}
