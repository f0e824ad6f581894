package rooms

import (
	"hash/maphash"
	"strings"
)

// DefaultMaxNames bounds the verified authors' names one room remembers.
// A name costs about 40 bytes whatever its length (BenchmarkNameMemory): a
// full room holds about 40 KB. Only a verified post adds one, so one
// signed-in user adds at most one name to each room.
const DefaultMaxNames = 1000

// names remembers the names verified authors have posted under in one room,
// so that an unverified post cannot take one: the hash of each name, as
// nameHash folds it, and the sequence number of the newest verified post
// under it. It goes with its room.
type names map[uint64]uint64

// nameHash hashes name folded the way a reader would confuse two names:
// letter case, and spaces around and between words, which a page does not
// show. Lookalike letters from other scripts are not folded.
func nameHash(name string) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for word := range strings.FieldsSeq(name) {
		h.WriteString(strings.ToLower(word))
		h.WriteByte(' ')
	}
	return h.Sum64()
}

// has reports whether a verified author posted under the name hashed to h.
func (n names) has(h uint64) bool {
	_, ok := n[h]
	return ok
}

// add remembers that a verified author posted message seq under the name
// hashed to h. Past max names, the one whose verified author posted least
// recently is forgotten: in a room that busy, the regulars stay reserved.
func (n names) add(h, seq uint64, max int) {
	if _, ok := n[h]; !ok && len(n) >= max {
		var oldest uint64
		oldestSeq := seq
		for k, s := range n {
			if s < oldestSeq {
				oldest, oldestSeq = k, s
			}
		}
		delete(n, oldest)
	}
	n[h] = seq
}
