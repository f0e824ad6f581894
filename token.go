package chat

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/service"
	"github.com/caddy-chat/caddy-chat/token"
)

// TokenConfig signs callers in by the JSON Web Tokens that the site's own
// sign-in issues, an auth provider or a function of the site: the token's
// user is the author, verified, and its rooms claim grants private rooms.
type TokenConfig struct {
	// The algorithm of Key: hs256, rs256, es256 or eddsa. Tokens signed
	// with any other are refused.
	Alg string `json:"alg,omitempty"`
	// For hs256 the shared secret, best a placeholder such as
	// {env.CHAT_TOKEN_SECRET}; for the others the path of a PEM file
	// with the public key.
	Key string `json:"key,omitempty"`
	// The https URL of a JSON Web Key Set, instead of Alg and Key.
	JWKS string `json:"jwks,omitempty"`
	// A PEM file of the certificate authority of the JWKS server, for one
	// with a private CA. Default: the system's roots.
	JWKSCA string `json:"jwks_ca,omitempty"`
	// The iss a token must have. Default: any; required with JWKS.
	Issuer string `json:"issuer,omitempty"`
	// The aud a token must have among its audiences. Default: any;
	// required with JWKS.
	Audience string `json:"audience,omitempty"`
	// The claim that names the author. Default: sub.
	UserClaim string `json:"user_claim,omitempty"`
	// The claim that grants rooms. Default: chat.
	RoomsClaim string `json:"rooms_claim,omitempty"`
	// Where to look for the token, in order: "header" (Authorization:
	// Bearer), "cookie:<name>", "query:<name>". Default: header,
	// cookie:chat_token, query:access_token; the chat's pages send the
	// query, as EventSource sends no headers.
	From []string `json:"from,omitempty"`
	// The URL, on the site, where the chat's room page fetches its token:
	// a function of the site that answers {"token": "..."} to a signed-in
	// user. Default: none; the page posts and reads as anyone.
	TokenURL string `json:"token_url,omitempty"`

	verifier *token.Verifier
	jwksKey  string // of the JWKS's fetcher in jwksFetchers; "" for a key
}

// DefaultTokenFrom is where a token is looked for by default.
var DefaultTokenFrom = []string{tokenFromHeader, "cookie:chat_token", "query:access_token"}

const tokenFromHeader = "header"

// provision makes the verifier: it reads the key, or takes the JWKS's
// fetcher, which a config before this one may have left fetched.
func (t *TokenConfig) provision(logger *zap.Logger) error {
	if err := t.validate(); err != nil {
		return err
	}
	if len(t.From) == 0 {
		t.From = DefaultTokenFrom
	}
	repl := caddy.NewReplacer()
	var keys token.Keys
	if t.JWKS != "" {
		jwks, err := t.loadJWKS(repl, logger)
		if err != nil {
			return err
		}
		keys = jwks
	} else {
		material := []byte(repl.ReplaceKnown(t.Key, ""))
		if t.Alg == token.HS256 && string(material) == t.Key {
			// Not a placeholder: the secret is in the config, which
			// the admin API serves and backups keep.
			logger.Warn("the hs256 secret is written in the config; use a placeholder such as {env.CHAT_TOKEN_SECRET}")
		}
		if t.Alg != token.HS256 {
			pem, err := os.ReadFile(string(material))
			if err != nil {
				return fmt.Errorf("token key %s: %w", t.Alg, err)
			}
			material = pem
		} else if len(material) == 0 {
			// Never the secret itself in an error: the placeholder.
			return fmt.Errorf("token key hs256: %s is empty; set it to a secret of 32 bytes or more", t.Key)
		}
		key, err := token.NewKey(t.Alg, material)
		if err != nil {
			return fmt.Errorf("token key: %w", err)
		}
		keys = key
	}
	v, err := token.New(token.Config{Keys: keys, Issuer: t.Issuer, Audience: t.Audience, UserClaim: t.UserClaim, RoomsClaim: t.RoomsClaim})
	if err != nil {
		return errors.Join(err, t.cleanup())
	}
	t.verifier = v
	return nil
}

// jwksFetchers holds each JWKS's fetcher across config reloads, by its URL
// and CA: a reload keeps the keys known and waits for no fetch, even while
// the provider is down, and leaves no fetcher or connection behind.
var jwksFetchers = caddy.NewUsagePool()

// jwksFetcher keeps one JWKS fresh, for every config that names it.
type jwksFetcher struct {
	jwks   *token.JWKS
	client *http.Client
	stop   context.CancelFunc // ends the refreshes
	// logger is the newest config's: an older one's logs may be closed.
	logger atomic.Pointer[zap.Logger]
}

// Destruct ends the refreshes and closes the connections kept alive to
// the JWKS server, when no config names it any more.
func (f *jwksFetcher) Destruct() error {
	f.stop()
	f.client.CloseIdleConnections()
	return nil
}

// loadJWKS takes a reference to the fetcher of the JWKS, making it, with a
// first fetch that waits at most token.JWKSTimeout, when no config has.
func (t *TokenConfig) loadJWKS(repl *caddy.Replacer, logger *zap.Logger) (*token.JWKS, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	key := "jwks " + t.JWKS
	if t.JWKSCA != "" {
		pem, err := os.ReadFile(repl.ReplaceKnown(t.JWKSCA, ""))
		if err != nil {
			return nil, fmt.Errorf("jwks_ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("jwks_ca %s: no certificate in PEM", t.JWKSCA)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots}
		// By the CA's contents, not its path: a reload after the CA
		// changed fetches with the new one.
		key += fmt.Sprintf(" ca %x", sha256.Sum256(pem))
	}
	val, _, err := jwksFetchers.LoadOrNew(key, func() (caddy.Destructor, error) {
		f := &jwksFetcher{client: &http.Client{Timeout: token.JWKSTimeout, Transport: transport}}
		f.logger.Store(logger)
		ctx, stop := context.WithCancel(context.Background())
		jwks, err := token.NewJWKS(ctx, t.JWKS, f.client, func(err error) {
			f.logger.Load().Warn("fetching the JWKS failed; the keys fetched before still verify",
				zap.String("jwks", t.JWKS), zap.Error(err))
		})
		if err != nil {
			stop()
			f.client.CloseIdleConnections()
			return nil, err
		}
		f.jwks, f.stop = jwks, stop
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	t.jwksKey = key
	f := val.(*jwksFetcher)
	f.logger.Store(logger)
	return f.jwks, nil
}

// validate checks the choice of keys and the token's sources.
func (t *TokenConfig) validate() error {
	var errs []error
	switch {
	case t.JWKS != "" && t.Key != "":
		errs = append(errs, errors.New("token: key and jwks exclude each other"))
	case t.JWKS == "" && t.Key == "":
		errs = append(errs, errors.New("token: a key or a jwks is required"))
	case t.JWKS != "" && !strings.HasPrefix(t.JWKS, "https://"):
		errs = append(errs, fmt.Errorf("token: jwks %q: want an https URL, which no one on the way can change", t.JWKS))
	case t.Key != "" && t.Alg != token.HS256 && t.Alg != token.RS256 && t.Alg != token.ES256 && t.Alg != token.EdDSA:
		errs = append(errs, fmt.Errorf("token: key: unknown algorithm %q; want hs256, rs256, es256 or eddsa", t.Alg))
	}
	if t.JWKS != "" && (t.Issuer == "" || t.Audience == "") {
		// A provider's key set signs the tokens of all its customers,
		// and Google's those of every Firebase project: without both,
		// any of them, made for another site, would sign in here.
		errs = append(errs, errors.New("token: jwks needs issuer and audience: a provider's key set signs every one of its customers' tokens, so only they tell this site's from another's"))
	}
	if t.JWKSCA != "" && t.JWKS == "" {
		errs = append(errs, errors.New("token: jwks_ca is for a jwks"))
	}
	for _, from := range t.From {
		kind, name, _ := strings.Cut(from, ":")
		if !(from == tokenFromHeader || (kind == "cookie" || kind == "query") && name != "") {
			errs = append(errs, fmt.Errorf("token: from %q: want header, cookie:<name> or query:<name>", from))
		}
	}
	return errors.Join(errs...)
}

// cleanup releases the JWKS's fetcher; the last config that names it
// ends its refreshes. It is safe to call more than once: Caddy cleans up
// a handler whose provisioning failed, after provision did.
func (t *TokenConfig) cleanup() error {
	if t.jwksKey == "" {
		return nil
	}
	key := t.jwksKey
	t.jwksKey = ""
	if _, err := jwksFetchers.Delete(key); err != nil {
		return fmt.Errorf("releasing the JWKS fetcher: %w", err)
	}
	return nil
}

// find returns the token that r carries, "" for none. An Authorization
// header of another scheme, such as basic_auth's, is no token.
func (t *TokenConfig) find(r *http.Request) string {
	for _, from := range t.From {
		kind, name, _ := strings.Cut(from, ":")
		var raw string
		switch kind {
		case tokenFromHeader:
			scheme, rest, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			if strings.EqualFold(scheme, "Bearer") {
				raw = strings.TrimSpace(rest)
			}
		case "cookie":
			if cookie, err := r.Cookie(name); err == nil {
				raw = cookie.Value
			}
		case "query":
			raw = r.URL.Query().Get(name)
		}
		if raw != "" {
			return raw
		}
	}
	return ""
}

// signIn verifies the token r carries, if any, into c: its grants, its
// expiry, and its user as the author unless the identity named one. A
// token that does not verify refuses every act of c.
func (t *TokenConfig) signIn(r *http.Request, c *service.Caller) {
	raw := t.find(r)
	if raw == "" {
		return
	}
	claims, err := t.verifier.Verify(r.Context(), raw)
	if err == nil && claims.User != "" && !service.ValidUser(claims.User) {
		err = &token.Error{Reason: token.Invalid, Why: token.WhyClaims}
	}
	if err != nil {
		c.Refused = service.TokenRefusal(err)
		return
	}
	c.Grants, c.Expires = &claims.Grants, claims.Expires
	if c.User == "" {
		c.User, c.UserByToken = claims.User, claims.User != ""
	}
}
