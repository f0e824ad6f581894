package token

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Algorithms of a Key, as the Caddyfile names them.
const (
	HS256 = "hs256"
	RS256 = "rs256"
	ES256 = "es256"
	EdDSA = "eddsa"
)

// minSecret is the shortest HS256 secret, in bytes: RFC 7518 asks for a key
// as long as the hash, and a shorter one is open to guessing offline from
// any token seen.
const minSecret = 32

// Key is one key that verifies tokens of one algorithm.
type Key struct {
	method jwt.SigningMethod
	key    any
}

// NewKey returns the key of alg (hs256, rs256, es256, eddsa): for hs256 the
// shared secret, for the others a public key in PEM (a PUBLIC KEY, an RSA
// PUBLIC KEY or a CERTIFICATE).
func NewKey(alg string, material []byte) (Key, error) {
	if alg == HS256 {
		if len(material) < minSecret {
			return Key{}, fmt.Errorf("hs256: the secret is %d bytes; want %d or more", len(material), minSecret)
		}
		return Key{method: jwt.SigningMethodHS256, key: material}, nil
	}
	pub, err := parsePublicKey(material)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", alg, err)
	}
	k := Key{key: pub}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		k.method = jwt.SigningMethodRS256
		if pub.N.BitLen() < 2048 {
			return Key{}, fmt.Errorf("%s: the RSA key has %d bits; want 2048 or more", alg, pub.N.BitLen())
		}
	case *ecdsa.PublicKey:
		k.method = jwt.SigningMethodES256
		if pub.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%s: ES256 needs a P-256 key, not %s", alg, pub.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		k.method = jwt.SigningMethodEdDSA
	default:
		return Key{}, fmt.Errorf("%s: unsupported key type %T", alg, pub)
	}
	if want := map[string]string{RS256: "RS256", ES256: "ES256", EdDSA: "EdDSA"}[alg]; want != k.method.Alg() {
		return Key{}, fmt.Errorf("%s: the PEM holds a key for %s", alg, k.method.Alg())
	}
	return k, nil
}

// parsePublicKey reads the first public key or certificate in PEM.
func parsePublicKey(material []byte) (any, error) {
	block, _ := pem.Decode(material)
	if block == nil {
		return nil, errors.New("no PEM block: want a public key such as -----BEGIN PUBLIC KEY-----")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	return nil, fmt.Errorf("a PEM %q block: want a PUBLIC KEY or a CERTIFICATE, never a private key", block.Type)
}

func (k Key) keyfunc(context.Context) jwt.Keyfunc {
	return func(*jwt.Token) (any, error) { return k.key, nil }
}

func (k Key) methods() []string { return []string{k.method.Alg()} }

// JWKS timings.
const (
	// JWKSTimeout bounds each fetch of a JWKS.
	JWKSTimeout = 5 * time.Second
	// JWKSRefresh is how often a JWKS is fetched again in the background:
	// a key removed from it stops verifying by then.
	JWKSRefresh = 15 * time.Minute
	// JWKSUnknownKeyRefresh is how often, at most, a token with a key id
	// the cached JWKS lacks fetches it again: a key added by a rotation
	// verifies at once, and tokens with made-up ids cannot make this
	// server hammer the auth provider's. Any token spends the minute's
	// fetch, one with a made-up id too: a key added in the same minute
	// verifies from the next fetch, at most a minute later when a token of
	// that key comes, or at the JWKSRefresh.
	JWKSUnknownKeyRefresh = time.Minute
)

// JWKS are the keys of a JSON Web Key Set fetched from a URL. They are
// cached: the set is fetched again in the background every JWKSRefresh, and
// on a token with an unknown key id at most every JWKSUnknownKeyRefresh. A
// fetch that fails keeps the keys already known, so an outage of the auth
// provider never holds up a token whose key is cached.
type JWKS struct {
	kf keyfunc.Keyfunc
}

// errUnknownKey is a token for which the JWKS has no key.
var errUnknownKey = errors.New("no key with the token's key id")

// asymmetric are the algorithms a JWKS may verify: public keys only, so
// that a symmetric key in a set never verifies a token anyone could sign.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// NewJWKS fetches the set at url, once, with client, and keeps it fresh
// until ctx is done. A first fetch that fails is no error: the set is
// fetched again for the first token, and failed reports every failure.
func NewJWKS(ctx context.Context, url string, client *http.Client, failed func(error)) (*JWKS, error) {
	noError := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               JWKSTimeout,
		NoErrorReturnFirstHTTPReq: &noError,
		RefreshInterval:           JWKSRefresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(JWKSUnknownKeyRefresh), 1),
		// A token with an unknown key id waits for a fetch the limit
		// allows now, never for the limit itself.
		RateLimitWaitMax: JWKSTimeout,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) { failed(err) }
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	return &JWKS{kf: kf}, nil
}

// keyfunc looks a token's key up, waiting for it as long as ctx allows.
// The fetch that an unknown key id starts runs on the set's own context,
// not on ctx: a request that ends meanwhile must not cancel it, or it
// would spend the minute's one fetch and fetch nothing.
func (j *JWKS) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		type found struct {
			key any
			err error
		}
		// Buffered: the lookup ends, at most JWKSTimeout later, with
		// no one left to wait for it.
		done := make(chan found, 1)
		go func() {
			key, err := j.kf.Keyfunc(t)
			done <- found{key, err}
		}()
		var f found
		select {
		case f = <-done:
		case <-ctx.Done():
			f.err = ctx.Err()
		}
		if f.err != nil {
			// Its kid is not in the set, even fetched again when the
			// minute allows, or names a key of another algorithm.
			return nil, fmt.Errorf("%w: %w", errUnknownKey, f.err)
		}
		return f.key, nil
	}
}

func (j *JWKS) methods() []string { return asymmetric }
