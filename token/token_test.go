package token

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-chat/caddy-chat/internal/tokentest"
	"github.com/caddy-chat/caddy-chat/rooms"
)

var ctx = context.Background()

// staticVerifier verifies tokens with s's key, with cfg's other settings.
func staticVerifier(t *testing.T, s *tokentest.Signer, cfg Config) *Verifier {
	t.Helper()
	material := []byte(tokentest.Secret)
	if s.Alg != HS256 {
		material = s.PublicPEM(t)
	}
	key, err := NewKey(s.Alg, material)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keys = key
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// refusedFor fails t unless err is a refusal for reason and why.
func refusedFor(t *testing.T, err error, reason Reason, why string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a refusal", err)
	}
	if e.Reason != reason || e.Why != why {
		t.Fatalf("refused for %s (%s), want %s (%s): %v", e.Reason, e.Why, reason, why, err)
	}
}

func TestEveryAlgorithmVerifiesUserAndGrants(t *testing.T) {
	for _, alg := range []string{HS256, RS256, ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			s := tokentest.NewSigner(t, alg, "")
			v := staticVerifier(t, s, Config{})
			raw := s.Sign(t, tokentest.Claims("alice", time.Minute, map[string][]string{
				"read": {"team-*"}, "post": {"team-a"}, "moderate": {"team-a"},
			}))
			c, err := v.Verify(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			if c.User != "alice" || time.Until(c.Expires) > time.Minute || time.Until(c.Expires) < 58*time.Second {
				t.Fatalf("claims %+v: want alice, expiring in a minute", c)
			}
			if !c.Grants.Read.Match("team-b") || c.Grants.Post.Match("team-b") || !c.Grants.Post.Match("team-a") || !c.Grants.Moderate.Match("team-a") {
				t.Fatalf("grants %+v", c.Grants)
			}
		})
	}
}

func TestClaimsNamedInConfig(t *testing.T) {
	s := tokentest.NewSigner(t, HS256, "")
	v := staticVerifier(t, s, Config{UserClaim: "email", RoomsClaim: "https://example.com/chat"})
	c, err := v.Verify(ctx, s.Sign(t, jwt.MapClaims{
		"exp": time.Now().Add(time.Minute).Unix(), "sub": "u1", "email": "a@example.com",
		"https://example.com/chat": map[string]any{"read": []string{"*"}, "other": 1},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "a@example.com" || !c.Grants.Read.Match("any") {
		t.Fatalf("claims %+v", c)
	}
}

func TestRefusalsSayWhy(t *testing.T) {
	s := tokentest.NewSigner(t, RS256, "")
	v := staticVerifier(t, s, Config{Issuer: "https://auth.example.com/", Audience: "chat"})
	good := func() jwt.MapClaims {
		c := tokentest.Claims("alice", time.Minute, nil)
		c["iss"], c["aud"] = "https://auth.example.com/", "chat"
		return c
	}
	if _, err := v.Verify(ctx, s.Sign(t, good())); err != nil {
		t.Fatal(err)
	}
	with := func(k string, val any) string {
		c := good()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return s.Sign(t, c)
	}
	other := tokentest.NewSigner(t, RS256, "")
	otherToken := other.Sign(t, good())
	tampered := s.Sign(t, good())
	tampered = tampered[:len(tampered)-4] + "AAAA"
	// The classic confusion: HS256 "signed" with the RSA public key, which
	// an attacker can read.
	confused, err := jwt.NewWithClaims(jwt.SigningMethodHS256, good()).SignedString(s.PublicPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, good()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, raw string
		reason    Reason
		why       string
	}{
		{"expired", with("exp", time.Now().Add(-time.Minute).Unix()), Expired, ""},
		{"expired within the skew", with("exp", time.Now().Add(-10*time.Second).Unix()), "", ""},
		{"no exp", with("exp", nil), Invalid, WhyClaims},
		{"another issuer", with("iss", "https://evil.example.com/"), Invalid, WhyIssuer},
		{"another audience", with("aud", "billing"), Invalid, WhyAudience},
		{"not valid yet", with("nbf", time.Now().Add(time.Minute).Unix()), Invalid, WhyNotYetValid},
		{"nbf within the skew", with("nbf", time.Now().Add(20*time.Second).Unix()), "", ""},
		{"issued in the future", with("iat", time.Now().Add(time.Minute).Unix()), Invalid, WhyNotYetValid},
		{"another key", otherToken, Invalid, WhySignature},
		{"tampered", tampered, Invalid, WhySignature},
		{"HS256 with the public key", confused, Invalid, WhyAlgorithm},
		{"alg none", none, Invalid, WhyAlgorithm},
		{"malformed", "not.a.token", Invalid, WhyMalformed},
		{"user not a string", with("sub", 42), Invalid, WhyClaims},
		{"grants not an object", with("chat", []string{"team-a"}), Invalid, WhyClaims},
		{"a grant not a pattern", with("chat", map[string]any{"read": []string{"team/a"}}), Invalid, WhyClaims},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Verify(ctx, c.raw)
			if c.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			refusedFor(t, err, c.reason, c.why)
		})
	}
}

func TestKeysRefused(t *testing.T) {
	rsaKey := tokentest.NewSigner(t, RS256, "").PublicPEM(t)
	for _, c := range []struct {
		name, alg string
		material  []byte
		want      string
	}{
		{"short secret", HS256, []byte("short"), "32 or more"},
		{"no PEM", RS256, []byte("nonsense"), "no PEM block"},
		{"RSA key for es256", ES256, rsaKey, "a key for RS256"},
		{"private key", EdDSA, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "never a private key"},
	} {
		if _, err := NewKey(c.alg, c.material); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

// jwksVerifier verifies tokens with the keys srv serves.
func jwksVerifier(t *testing.T, srv *tokentest.JWKSServer) (*Verifier, *[]error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	failures := new([]error)
	keys, err := NewJWKS(ctx, srv.URL(), srv.Client(), func(err error) { *failures = append(*failures, err) })
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{Keys: keys, Audience: "chat"})
	if err != nil {
		t.Fatal(err)
	}
	return v, failures
}

func claimsFor(user string) jwt.MapClaims {
	c := tokentest.Claims(user, time.Minute, map[string][]string{"read": {"*"}})
	c["aud"] = "chat"
	return c
}

func TestJWKSRotation(t *testing.T) {
	k1, k2 := tokentest.NewSigner(t, RS256, "k1"), tokentest.NewSigner(t, ES256, "k2")
	srv := tokentest.NewJWKSServer(t, k1)
	v, failures := jwksVerifier(t, srv)
	if _, err := v.Verify(ctx, k1.Sign(t, claimsFor("alice"))); err != nil {
		t.Fatal(err, *failures)
	}
	fetched := srv.Fetches()

	// The provider rotates: k2 replaces k1. A token with k2's id fetches
	// the set again, once; k1's tokens stop verifying with it.
	srv.SetKeys(k2)
	if _, err := v.Verify(ctx, k2.Sign(t, claimsFor("bob"))); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if n := srv.Fetches() - fetched; n != 1 {
		t.Fatalf("the new key id fetched the set %d times, want 1", n)
	}
	_, err := v.Verify(ctx, k1.Sign(t, claimsFor("alice")))
	refusedFor(t, err, Invalid, WhyUnknownKey)

	// More unknown ids within the minute fetch nothing.
	for i := range 5 {
		stranger := tokentest.NewSigner(t, ES256, "made-up-"+string(rune('a'+i)))
		_, err := v.Verify(ctx, stranger.Sign(t, claimsFor("mallory")))
		refusedFor(t, err, Invalid, WhyUnknownKey)
	}
	if n := srv.Fetches() - fetched; n != 1 {
		t.Fatalf("unknown key ids fetched the set %d times within a minute, want 1 in all", n)
	}
}

func TestJWKSHungKeepsKnownKeys(t *testing.T) {
	k1 := tokentest.NewSigner(t, EdDSA, "k1")
	srv := tokentest.NewJWKSServer(t, k1)
	v, _ := jwksVerifier(t, srv)
	srv.Hang()
	// An unknown id spends the one refresh the minute allows on the hung
	// server, which answers nothing within the fetch's timeout...
	unknown := tokentest.NewSigner(t, EdDSA, "new").Sign(t, claimsFor("x"))
	go func() { _, _ = v.Verify(ctx, unknown) }()
	time.Sleep(50 * time.Millisecond)
	// ...while tokens of the cached key verify at once.
	for range 20 {
		start := time.Now()
		if _, err := v.Verify(ctx, k1.Sign(t, claimsFor("alice"))); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("a token of a cached key took %v with the JWKS server hung", d)
		}
	}
}

func TestJWKSWithoutSymmetricKeys(t *testing.T) {
	// An HS256 token never verifies against a JWKS, whatever its kid.
	rsa := tokentest.NewSigner(t, RS256, "k1")
	srv := tokentest.NewJWKSServer(t, rsa)
	v, _ := jwksVerifier(t, srv)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor("mallory"))
	tok.Header["kid"] = "k1"
	raw, err := tok.SignedString(rsa.PublicPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(ctx, raw)
	refusedFor(t, err, Invalid, WhyAlgorithm)
}

func TestJWKSFirstFetchFailsThenRecovers(t *testing.T) {
	k1 := tokentest.NewSigner(t, ES256, "k1")
	srv := tokentest.NewJWKSServer(t, k1)
	// A client that does not trust the server: every fetch fails, and
	// says why.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var failures []error
	keys, err := NewJWKS(ctx, srv.URL(), &http.Client{}, func(err error) { failures = append(failures, err) })
	if err != nil {
		t.Fatal(err)
	}
	v, _ := New(Config{Keys: keys})
	_, err = v.Verify(ctx, k1.Sign(t, claimsFor("alice")))
	refusedFor(t, err, Invalid, WhyUnknownKey)
	if len(failures) == 0 || !strings.Contains(failures[0].Error(), "certificate") {
		t.Fatalf("failures reported: %v", failures)
	}
}

func TestGrantsMatchRooms(t *testing.T) {
	g := Grants{Read: rooms.Patterns{"team-*"}}
	if !g.Read.Match("team-x") || g.Post.Match("team-x") {
		t.Fatal(g)
	}
}

// FuzzVerify feeds the verifier arbitrary tokens: it refuses what does not
// verify with a reason, and never panics.
func FuzzVerify(f *testing.F) {
	s := tokentest.NewSigner(f, HS256, "")
	f.Add(s.Sign(f, tokentest.Claims("alice", time.Hour, map[string][]string{"read": {"a*"}})))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	key, _ := NewKey(HS256, []byte(tokentest.Secret))
	v, _ := New(Config{Keys: key})
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(ctx, raw)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" {
				t.Fatalf("error %v is not a refusal with a reason", err)
			}
			return
		}
		if c.Expires.IsZero() {
			t.Fatal("a token without exp verified")
		}
	})
}

// FuzzGrants feeds the rooms claim arbitrary JSON values.
func FuzzGrants(f *testing.F) {
	f.Add(`{"read":["team-*"],"post":["a"]}`)
	f.Add(`{"read":"x"}`)
	f.Add(`[1]`)
	f.Fuzz(func(t *testing.T, claim string) {
		var v any
		if err := json.Unmarshal([]byte(claim), &v); err != nil {
			return
		}
		g, err := parseGrants(v)
		if err != nil {
			return
		}
		for _, p := range append(append(append(rooms.Patterns{}, g.Read...), g.Post...), g.Moderate...) {
			if !rooms.ValidPattern(p) {
				t.Fatalf("invalid pattern %q granted", p)
			}
		}
	})
}

// TestJWKSUnknownKeyFetchOutlivesRequest: the fetch that a token with a
// new key id starts runs to its end although the request that started
// it gave up: the new key verifies once it is fetched, without another
// fetch, which the minute's limit would not allow.
func TestJWKSUnknownKeyFetchOutlivesRequest(t *testing.T) {
	k1, k2 := tokentest.NewSigner(t, ES256, "k1"), tokentest.NewSigner(t, ES256, "k2")
	srv := tokentest.NewJWKSServer(t, k1)
	v, _ := jwksVerifier(t, srv)
	srv.SetKeys(k1, k2)
	srv.Hang()
	impatient, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := v.Verify(impatient, k2.Sign(t, claimsFor("alice"))); err == nil {
		t.Fatal("a token of the new key verified with the JWKS server hung")
	}
	srv.Answer()
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := v.Verify(ctx, k2.Sign(t, claimsFor("alice")))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new key once the JWKS server answers: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
