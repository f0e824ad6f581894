// Package token verifies the JSON Web Tokens that a site's own sign-in
// issues to its chat users: who they are, and which rooms they may read,
// post to and moderate. It knows nothing of Caddy, so that any net/http
// program can verify the same tokens with the same answers.
//
// The algorithm is pinned by the key: a token signed with another algorithm
// than its key's, or with none, is refused, so an HS256 token "signed" with
// an RSA public key never verifies. exp is required; nbf and iat are
// honoured with Leeway of clock skew.
package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Leeway is the clock skew allowed between the token's issuer and here, for
// exp, nbf and iat.
const Leeway = 30 * time.Second

// Defaults of Config.
const (
	DefaultUserClaim  = "sub"
	DefaultRoomsClaim = "chat"
)

// Config is what a Verifier checks tokens against.
type Config struct {
	// Keys verify the signatures: a Key, or a JWKS fetched from a URL.
	Keys Keys
	// Issuer, when set, must be the token's iss.
	Issuer string
	// Audience, when set, must be among the token's aud.
	Audience string
	// UserClaim names the claim that holds the user. Default: sub.
	UserClaim string
	// RoomsClaim names the claim that holds the room grants. Default: chat.
	RoomsClaim string
}

// Keys are where a Verifier finds the key of a token.
type Keys interface {
	// keyfunc returns the key of a token, for the token's header.
	keyfunc(ctx context.Context) jwt.Keyfunc
	// methods are the algorithms these keys verify.
	methods() []string
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	methods []string // the algorithms the keys verify
	options []jwt.ParserOption
}

// New returns a verifier of cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.Keys == nil {
		return nil, errors.New("token: no key and no JWKS to verify tokens with")
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = DefaultUserClaim
	}
	if cfg.RoomsClaim == "" {
		cfg.RoomsClaim = DefaultRoomsClaim
	}
	// The algorithm is checked by keyfunc, not by the parser's
	// WithValidMethods, whose refusal tells an algorithm from a bad
	// signature only by its text.
	options := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	}
	if cfg.Issuer != "" {
		options = append(options, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		options = append(options, jwt.WithAudience(cfg.Audience))
	}
	return &Verifier{cfg: cfg, methods: cfg.Keys.methods(), options: options}, nil
}

// errAlgorithm is a token signed with an algorithm its keys do not verify.
var errAlgorithm = errors.New("the token's algorithm is not its key's")

// keyfunc returns the key of a token, once its algorithm is one of the
// keys': never for alg none, nor for HS256 against a public key.
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	keys := v.cfg.Keys.keyfunc(ctx)
	return func(t *jwt.Token) (any, error) {
		if !slices.Contains(v.methods, t.Method.Alg()) {
			return nil, fmt.Errorf("%w: %s, want %s", errAlgorithm, t.Method.Alg(), strings.Join(v.methods, ", "))
		}
		return keys(t)
	}
}

// Claims are what a verified token says of its holder.
type Claims struct {
	// User is the user claim, "" when the token has none: it then grants
	// rooms without naming an author.
	User string
	// Grants are the rooms the token grants.
	Grants Grants
	// Expires is the token's exp.
	Expires time.Time
}

// Grants are the rooms a token grants, by pattern, for each act, as the
// rooms claim holds them: {"read": ["team-*"], "post": ["team-a"],
// "moderate": ["team-a"]}.
type Grants struct {
	Read     rooms.Patterns `json:"read"`
	Post     rooms.Patterns `json:"post"`
	Moderate rooms.Patterns `json:"moderate"`
}

// Verify checks raw, a compact JWS, and returns what it claims. A token
// that is refused returns an *Error.
func (v *Verifier) Verify(ctx context.Context, raw string) (Claims, error) {
	var claims jwt.MapClaims
	_, err := jwt.ParseWithClaims(raw, &claims, v.keyfunc(ctx), v.options...)
	if err != nil {
		return Claims{}, refusal(err)
	}
	var c Claims
	// Required and checked by the parser.
	exp, _ := claims.GetExpirationTime()
	c.Expires = exp.Time
	if user, ok := claims[v.cfg.UserClaim]; ok {
		s, isString := user.(string)
		if !isString || s == "" {
			return Claims{}, invalid(WhyClaims, fmt.Errorf("the user claim %q is not a non-empty string", v.cfg.UserClaim))
		}
		c.User = s
	}
	if grants, ok := claims[v.cfg.RoomsClaim]; ok {
		if c.Grants, err = parseGrants(grants); err != nil {
			return Claims{}, invalid(WhyClaims, fmt.Errorf("the rooms claim %q: %w", v.cfg.RoomsClaim, err))
		}
	}
	return c, nil
}

// parseGrants reads a rooms claim as the JSON decoder left it.
func parseGrants(claim any) (Grants, error) {
	obj, ok := claim.(map[string]any)
	if !ok {
		return Grants{}, errors.New(`want an object such as {"read": ["team-*"]}`)
	}
	var g Grants
	for act, list := range obj {
		var dst *rooms.Patterns
		switch act {
		case "read":
			dst = &g.Read
		case "post":
			dst = &g.Post
		case "moderate":
			dst = &g.Moderate
		default:
			// Other claims may share the object: a site's own
			// grants of another kind are not ours to refuse.
			continue
		}
		items, ok := list.([]any)
		if !ok {
			return Grants{}, fmt.Errorf("%s: want a list of room patterns", act)
		}
		for _, item := range items {
			pattern, ok := item.(string)
			if !ok || !rooms.ValidPattern(pattern) {
				b, _ := json.Marshal(item)
				return Grants{}, fmt.Errorf("%s: %s is not a room pattern", act, b)
			}
			*dst = append(*dst, pattern)
		}
	}
	return g, nil
}

// Reason is the kind of a refusal, the label a client acts on.
type Reason string

// The reasons a token is refused.
const (
	// Missing: a token is needed and none came.
	Missing Reason = "token_missing"
	// Expired: the token's exp has passed; fetch a fresh one.
	Expired Reason = "token_expired"
	// Invalid: the token does not verify; Why says what failed.
	Invalid Reason = "token_invalid"
)

// What failed in an invalid token.
const (
	WhyMalformed   = "malformed"
	WhySignature   = "signature"
	WhyAlgorithm   = "algorithm"
	WhyIssuer      = "issuer"
	WhyAudience    = "audience"
	WhyNotYetValid = "not_yet_valid"
	WhyClaims      = "claims"
	WhyUnknownKey  = "unknown_key"
)

// Error is a refused token.
type Error struct {
	Reason Reason
	// Why is what failed in an Invalid token.
	Why string
	err error
}

func (e *Error) Error() string {
	switch e.Reason {
	case Missing:
		return "a token is required"
	case Expired:
		return "the token has expired"
	}
	return fmt.Sprintf("the token is invalid (%s): %v", e.Why, e.err)
}

func (e *Error) Unwrap() error { return e.err }

// invalid refuses a token for why.
func invalid(why string, err error) *Error { return &Error{Reason: Invalid, Why: why, err: err} }

// refusal names why the parser refused a token.
func refusal(err error) *Error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return &Error{Reason: Expired, err: err}
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid(WhyMalformed, err)
	case errors.Is(err, errAlgorithm):
		return invalid(WhyAlgorithm, err)
	case errors.Is(err, errUnknownKey):
		return invalid(WhyUnknownKey, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrInvalidKeyType):
		return invalid(WhySignature, err)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return invalid(WhyIssuer, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return invalid(WhyAudience, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return invalid(WhyNotYetValid, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// An algorithm the parser does not know, or one of ours that a
		// JWKS key of the token's kid is not for.
		return invalid(WhyAlgorithm, err)
	}
	return invalid(WhyClaims, err)
}
