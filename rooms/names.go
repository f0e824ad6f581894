package rooms

import (
	"hash/maphash"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
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

// nameHash hashes name as FoldName folds it, without allocating for a
// name of up to 64 characters.
func nameHash(name string) uint64 {
	var buf [64 * utf8.UTFMax]byte
	var h maphash.Hash
	h.SetSeed(seed)
	h.Write(appendFolded(buf[:0], name))
	return h.Sum64()
}

// FoldName returns name as reserve_names compares it, folded the way a
// reader would confuse two names: spellings that Unicode holds equivalent
// (NFKC: "e" and a combining diaeresis is "ë", fullwidth "ａ" is "a"),
// letter case, spaces around and between words, and code points a page
// does not show, which are left out (see invisible). "ALICE", " alice "
// and "alice\u034f" all fold to "alice". Lookalike letters from other
// scripts are not folded. A name that folds to "" shows nothing.
func FoldName(name string) string {
	return string(appendFolded(nil, name))
}

// appendFolded appends name, folded as FoldName says, to dst. A name in
// NFKC already, as typed names are, is folded as it is; another is read in
// NFKC a segment at a time, through an iterator kept for the next name.
func appendFolded(dst []byte, name string) []byte {
	space := false
	if norm.NFKC.QuickSpanString(name) == len(name) {
		for _, r := range name {
			dst, space = appendFoldedRune(dst, r, space)
		}
		return dst
	}
	segments := iterators.Get().(*norm.Iter)
	defer iterators.Put(segments)
	segments.InitString(norm.NFKC, name)
	for !segments.Done() {
		for _, r := range string(segments.Next()) {
			dst, space = appendFoldedRune(dst, r, space)
		}
	}
	return dst
}

// iterators keeps the NFKC iterators of appendFolded, which are too large
// to make for each name.
var iterators = sync.Pool{New: func() any { return new(norm.Iter) }}

// appendFoldedRune appends r, folded, to dst; space says a space is due
// before the next rune shown.
func appendFoldedRune(dst []byte, r rune, space bool) ([]byte, bool) {
	switch {
	case invisible(r):
	case unicode.IsSpace(r) || r == '\u2800':
		// U+2800, the blank braille pattern, shows as a space.
		space = len(dst) > 0
	default:
		if space {
			dst = append(dst, ' ')
			space = false
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
	}
	return dst, space
}

// invisible reports whether r is a code point that shows nothing of its
// own: Unicode's Default_Ignorable_Code_Point, as DerivedCoreProperties.txt
// derives it from Other_Default_Ignorable_Code_Point (the Hangul fillers
// U+115F, U+1160, U+3164 and U+FFA0, the grapheme joiner U+034F, the tag
// and unassigned ignorable ranges), Variation_Selector and the format
// characters (Cf: zero-width spaces and joiners, bidi controls, tag
// characters, the byte order mark). The derivation then leaves out a few
// format characters that do show, such as the Arabic number sign; they
// are folded here all the same, which only ever reserves more.
func invisible(r rune) bool {
	// ASCII has none: most names need no table lookup.
	return r >= utf8.RuneSelf && unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Cf)
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
