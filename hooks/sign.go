package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of a signed request, as the specification names them.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts a secret written as the specification serializes it.
const SecretPrefix = "whsec_"

// The specification's bounds on a symmetric key: 24 to 64 bytes.
const (
	minSecretBytes = 24
	maxSecretBytes = 64
)

// Tolerance is how far a request's timestamp may be from the receiver's
// clock, either way, before Verify calls it a replay. It is the reference
// libraries' default.
const Tolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrMissingHeaders = errors.New("webhook-id, webhook-timestamp or webhook-signature missing")
	ErrStale          = errors.New("webhook-timestamp too far from now")
	ErrBadSignature   = errors.New("no webhook-signature matches")
)

// Secret is a hook's HMAC-SHA256 key. Its String never shows the key, so a
// Secret printed into a log or an error gives nothing away.
type Secret struct {
	key []byte
}

// ParseSecret reads a secret in the specification's form, whsec_ followed by
// the base64 of 24 to 64 random bytes. A raw password is refused rather than
// taken as the key: a receiver's library decodes the base64 after whsec_, so
// any other string would sign with a key the receiver never has. The bare
// base64 without the prefix, which the reference libraries also accept, is
// refused for the same reason that it is easily mistaken for a password.
func ParseSecret(s string) (Secret, error) {
	encoded, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("secret must be %s followed by base64, as Standard Webhooks writes it", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return Secret{}, fmt.Errorf("secret after %s is not standard base64: %w", SecretPrefix, err)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return Secret{}, fmt.Errorf("secret is %d bytes, want %d to %d", len(key), minSecretBytes, maxSecretBytes)
	}
	return Secret{key: key}, nil
}

// IsZero reports whether s holds no key: requests then go unsigned.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// Equal reports whether s and o hold the same key.
func (s Secret) Equal(o Secret) bool { return hmac.Equal(s.key, o.key) }

// String hides the key.
func (s Secret) String() string {
	if s.IsZero() {
		return "(no secret)"
	}
	return SecretPrefix + "(redacted)"
}

// GoString hides the key from %#v too.
func (s Secret) GoString() string { return s.String() }

// Sign returns the webhook-signature value of a request: v1, then the base64
// HMAC-SHA256 of id.timestamp.body.
func (s Secret) Sign(id string, at time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(s.mac(id, strconv.FormatInt(at.Unix(), 10), body))
}

// SetHeaders adds the three headers that sign a request with body.
func (s Secret) SetHeaders(h http.Header, id string, at time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(id, at, body))
}

// Verify checks a received request the way a receiver should: its timestamp
// within Tolerance of now, and one of the space-separated v1 signatures
// matching (a sender rotating its secret sends several).
func (s Secret) Verify(h http.Header, body []byte, now time.Time) error {
	id, stamp, signatures := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || stamp == "" || signatures == "" {
		return ErrMissingHeaders
	}
	seconds, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %w", stamp, err)
	}
	if d := now.Sub(time.Unix(seconds, 0)); d > Tolerance || d < -Tolerance {
		return ErrStale
	}
	want := s.mac(id, stamp, body)
	for _, sig := range strings.Fields(signatures) {
		encoded, ok := strings.CutPrefix(sig, "v1,")
		if !ok {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}

// mac is the HMAC-SHA256 of id.stamp.body under s.
func (s Secret) mac(id, stamp string, body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(stamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
