// Package tokentest signs real JSON Web Tokens for tests, with keys of every
// algorithm the chat verifies, and serves them as a JWKS over HTTPS, as an
// auth provider does: keys can be rotated, and the server can hang.
package tokentest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Secret is an HS256 secret long enough for the verifier.
const Secret = "a-test-secret-of-at-least-32-bytes-0123456789"

// Signer signs tokens with one key.
type Signer struct {
	Alg    string // as the Caddyfile names it: hs256, rs256, es256, eddsa
	Kid    string // the key id in the token's header and the JWKS; "" for none
	method jwt.SigningMethod
	priv   any
	pub    any
}

// NewSigner returns a signer with a fresh key of alg; hs256 signs with
// Secret.
func NewSigner(t testing.TB, alg, kid string) *Signer {
	t.Helper()
	s := &Signer{Alg: alg, Kid: kid}
	var err error
	switch alg {
	case "hs256":
		s.method, s.priv, s.pub = jwt.SigningMethodHS256, []byte(Secret), []byte(Secret)
	case "rs256":
		var k *rsa.PrivateKey
		k, err = rsa.GenerateKey(rand.Reader, 2048)
		if err == nil {
			s.method, s.priv, s.pub = jwt.SigningMethodRS256, k, &k.PublicKey
		}
	case "es256":
		var k *ecdsa.PrivateKey
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err == nil {
			s.method, s.priv, s.pub = jwt.SigningMethodES256, k, &k.PublicKey
		}
	case "eddsa":
		var pub ed25519.PublicKey
		var priv ed25519.PrivateKey
		pub, priv, err = ed25519.GenerateKey(rand.Reader)
		s.method, s.priv, s.pub = jwt.SigningMethodEdDSA, priv, pub
	default:
		t.Fatalf("tokentest: unknown algorithm %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Sign signs claims.
func (s *Signer) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, claims)
	if s.Kid != "" {
		tok.Header["kid"] = s.Kid
	}
	raw, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Claims are the claims of a token for user, valid from now for ttl, with
// the rooms claim chat granting read, post and moderate.
func Claims(user string, ttl time.Duration, grants map[string][]string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if user != "" {
		c["sub"] = user
	}
	if grants != nil {
		c["chat"] = grants
	}
	return c
}

// PublicPEM is the signer's public key in PEM, for a key file.
func (s *Signer) PublicPEM(t testing.TB) []byte {
	t.Helper()
	if s.Alg == "hs256" {
		t.Fatal("tokentest: an HS256 key has no public part")
	}
	der, err := x509.MarshalPKIXPublicKey(s.pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// WritePublicPEM writes the public key to a file in dir and returns its
// path.
func (s *Signer) WritePublicPEM(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, s.Alg+"-"+s.Kid+".pem")
	if err := os.WriteFile(path, s.PublicPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// JWK is the signer's public key as a JSON Web Key.
func (s *Signer) JWK() map[string]string {
	b64 := base64.RawURLEncoding.EncodeToString
	jwk := map[string]string{"kid": s.Kid, "use": "sig", "alg": s.method.Alg()}
	switch pub := s.pub.(type) {
	case *rsa.PublicKey:
		jwk["kty"], jwk["n"], jwk["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		ecdh, _ := pub.ECDH()
		raw := ecdh.Bytes() // 0x04 || X || Y
		jwk["kty"], jwk["crv"], jwk["x"], jwk["y"] = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
	case ed25519.PublicKey:
		jwk["kty"], jwk["crv"], jwk["x"] = "OKP", "Ed25519", b64(pub)
	}
	return jwk
}

// JWKSServer serves a JWKS over HTTPS, as an auth provider does.
type JWKSServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []*Signer
	hang    chan struct{} // closed to answer again; nil: answering
	fetches atomic.Int64
}

// NewJWKSServer serves keys at /.well-known/jwks.json until the test ends.
func NewJWKSServer(t testing.TB, keys ...*Signer) *JWKSServer {
	s := &JWKSServer{keys: keys}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.Answer()
		s.Close()
	})
	return s
}

func (s *JWKSServer) serve(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	hang, keys := s.hang, s.keys
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	}
	set := struct {
		Keys []map[string]string `json:"keys"`
	}{Keys: []map[string]string{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK())
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}

// URL is the JWKS's address.
func (s *JWKSServer) URL() string { return s.Server.URL + "/.well-known/jwks.json" }

// SetKeys replaces the keys served: a rotation.
func (s *JWKSServer) SetKeys(keys ...*Signer) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// Hang makes the server hold every request without answering, until
// Answer.
func (s *JWKSServer) Hang() {
	s.mu.Lock()
	if s.hang == nil {
		s.hang = make(chan struct{})
	}
	s.mu.Unlock()
}

// Answer ends a Hang.
func (s *JWKSServer) Answer() {
	s.mu.Lock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
	s.mu.Unlock()
}

// Fetches counts the requests for the JWKS so far.
func (s *JWKSServer) Fetches() int64 { return s.fetches.Load() }

// CAFile writes the server's certificate, which its clients must trust,
// to a PEM file in dir and returns its path.
func (s *JWKSServer) CAFile(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "jwks-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
