package rooms

import (
	"crypto/sha256"
	"encoding/binary"
)

// DigestSize is the bytes of SHA-256 that KeyDigest and ContentDigest keep:
// enough that no two keys or messages of a room meet by chance.
const DigestSize = 16

// KeyDigest names k in a durable or shared store. The store outlives the
// process, so the digest must be the same in the next one and on every
// node: a cryptographic hash, not maphash.
func KeyDigest(k Key) []byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(k.Scope)))])
	h.Write([]byte(k.Scope))
	h.Write([]byte(k.Name))
	return h.Sum(nil)[:DigestSize]
}

// ContentDigest hashes what a retry must carry unchanged: user, text and
// verification, so that a store tells a retry from a reuse of its key.
func ContentDigest(m Message) []byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64 + 1]byte
	l := binary.PutUvarint(n[:], uint64(len(m.User)))
	if m.Verified {
		n[l] = 1
	}
	h.Write(n[:l+1])
	h.Write([]byte(m.User))
	h.Write([]byte(m.Message))
	return h.Sum(nil)[:DigestSize]
}

// SecretDigest is what a store keeps of an author's secret: enough to
// check the secret when the author shows it again, and nothing that gives
// it back.
func SecretDigest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return string(sum[:DigestSize])
}
