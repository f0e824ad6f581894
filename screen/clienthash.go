package screen

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// salt keys ClientHash for this process: a screen cannot reverse a hash by
// hashing every address, and hashes mean nothing once the process is gone.
var salt = func() []byte {
	b := make([]byte, 32)
	rand.Read(b) // never fails: crypto/rand panics rather than return an error
	return b
}()

// ClientHash names a poster's client key (its identity, or its address)
// to the screen: the same within this process, and no clue to the key.
func ClientHash(key string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(key))
	return hex.EncodeToString(m.Sum(nil)[:16])
}
