// Package blocklist finds blocked words in a text, compared as names are
// (rooms.FoldName): letter case, spacing, invisible code points and
// Unicode compatibility forms do not hide a word. A word matches whole
// words of the text, so that blocking "ass" leaves "class" alone, except
// where the word's edge is in a script written without spaces between
// words (Chinese, Japanese, Thai and their neighbours), where it matches
// inside a run of text too.
package blocklist

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// List is a set of blocked words, folded once. A nil *List blocks
// nothing, at no cost. Its methods are safe for concurrent use.
type List struct {
	// words holds the words that are one token of text: a text is cut
	// into its tokens, each looked up once, however many words there are.
	words map[string]struct{}
	// phrases holds the others, with spaces or punctuation inside, or in
	// a script without spaces: each is searched for in the text.
	phrases []string
}

// New returns the list of words, or nil for none. It refuses a word that
// folds to nothing, which would match every text.
func New(words []string) (*List, error) {
	if len(words) == 0 {
		return nil, nil
	}
	l := &List{words: make(map[string]struct{})}
	for _, w := range words {
		folded := rooms.FoldName(w)
		switch {
		case folded == "":
			return nil, fmt.Errorf("blocked word %q shows nothing", w)
		case isToken(folded):
			l.words[folded] = struct{}{}
		default:
			l.phrases = append(l.phrases, folded)
		}
	}
	return l, nil
}

// Len is how many distinct words the list blocks.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return len(l.words) + len(l.phrases)
}

// Find returns the first blocked word, folded, that text contains, and
// reports whether there is one.
func (l *List) Find(text string) (string, bool) {
	if l == nil {
		return "", false
	}
	folded := rooms.FoldName(text)
	if len(l.words) > 0 {
		for rest := folded; rest != ""; {
			start := strings.IndexFunc(rest, inWord)
			if start < 0 {
				break
			}
			rest = rest[start:]
			end := strings.IndexFunc(rest, func(r rune) bool { return !inWord(r) })
			if end < 0 {
				end = len(rest)
			}
			if _, ok := l.words[rest[:end]]; ok {
				return rest[:end], true
			}
			rest = rest[end:]
		}
	}
	for _, p := range l.phrases {
		if containsWhole(folded, p) {
			return p, true
		}
	}
	return "", false
}

// containsWhole reports whether text holds phrase with no letter or digit
// of a spaced script joined to either end.
func containsWhole(text, phrase string) bool {
	first, _ := utf8.DecodeRuneInString(phrase)
	last, _ := utf8.DecodeLastRuneInString(phrase)
	for from := 0; ; {
		i := strings.Index(text[from:], phrase)
		if i < 0 {
			return false
		}
		i += from
		before, _ := utf8.DecodeLastRuneInString(text[:i])
		after, _ := utf8.DecodeRuneInString(text[i+len(phrase):])
		// Past either end of text there is no rune: RuneError is none
		// of a word's.
		if !(inWord(first) && inWord(before)) && !(inWord(last) && inWord(after)) {
			return true
		}
		_, size := utf8.DecodeRuneInString(text[i:])
		from = i + size
	}
}

// isToken reports whether w is one run of word runes.
func isToken(w string) bool {
	return strings.IndexFunc(w, func(r rune) bool { return !inWord(r) }) < 0
}

// inWord reports whether r is part of a word in a script that separates
// words with spaces: such a rune next to a match means the match is part
// of a longer word.
func inWord(r rune) bool {
	return (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)) && !unicode.In(r, unspaced...)
}

// unspaced are the scripts written without spaces between words.
var unspaced = []*unicode.RangeTable{unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Thai, unicode.Lao, unicode.Khmer, unicode.Myanmar, unicode.Tibetan}

// ReadFile reads the words of the file at path: one a line, blank lines
// and lines beginning with # left out, spaces around a word trimmed.
func ReadFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading blocked words: %w", err)
	}
	defer f.Close()
	var words []string
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		w := strings.TrimSpace(lines.Text())
		if w != "" && !strings.HasPrefix(w, "#") {
			words = append(words, w)
		}
	}
	if err := lines.Err(); err != nil {
		return nil, fmt.Errorf("reading blocked words from %s: %w", path, err)
	}
	return words, nil
}
