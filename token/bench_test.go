package token

import (
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/internal/tokentest"
)

// BenchmarkVerify is what a token costs a request: a stream's open or a
// submit verifies one, and nothing after (a delivery checks nothing).
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{HS256, ES256, EdDSA, RS256} {
		b.Run(alg, func(b *testing.B) {
			s := tokentest.NewSigner(b, alg, "")
			material := []byte(tokentest.Secret)
			if alg != HS256 {
				material = s.PublicPEM(b)
			}
			key, err := NewKey(alg, material)
			if err != nil {
				b.Fatal(err)
			}
			v, _ := New(Config{Keys: key, Audience: "chat"})
			c := tokentest.Claims("alice", time.Hour, map[string][]string{"read": {"team-*"}, "post": {"team-a"}})
			c["aud"] = "chat"
			raw := s.Sign(b, c)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
