package blocklist

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestFindFoldsAsNames: a blocked word is found however the text spells
// it in case, spacing, invisible code points or compatibility forms, as a
// whole word and not inside a longer one, except in a script written
// without spaces.
func TestFindFoldsAsNames(t *testing.T) {
	l, err := New([]string{"Spam", "buy  now", "f*ck", "廣告"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		text string
		want string // "" for none
	}{
		{"hello there", ""},
		{"SPAM!", "spam"},
		{"cheap sp\u200bam here", "spam"},
		{"ｓｐａｍ", "spam"},
		{"spammer", ""},
		{"antispam", ""},
		{"Buy\u00a0\u00a0NOW today", "buy now"},
		{"buy nowhere", ""},
		{"what the F*CK", "f*ck"},
		{"這是廣告啊", "廣告"},
		{"line one\nspam", "spam"},
	} {
		got, found := l.Find(tt.text)
		if found != (tt.want != "") || got != tt.want {
			t.Errorf("Find(%q) = %q, %v; want %q", tt.text, got, found, tt.want)
		}
	}
}

// TestNoWordsBlockNothing: a list of no words is nil, and finds nothing.
func TestNoWordsBlockNothing(t *testing.T) {
	l, err := New(nil)
	if err != nil || l != nil {
		t.Fatalf("New(nil) = %v, %v; want nil", l, err)
	}
	if _, found := l.Find("anything"); found || l.Len() != 0 {
		t.Fatal("a nil list found a word")
	}
}

// TestInvisibleWordRefused: a word that folds to nothing would block
// every text; it is refused.
func TestInvisibleWordRefused(t *testing.T) {
	if _, err := New([]string{"ok", "\u200b "}); err == nil {
		t.Fatal("a word of invisible code points was taken")
	}
}

// TestReadFile: a words file has a word a line; blank lines and # comments
// are left out.
func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "words.txt")
	if err := os.WriteFile(path, []byte("# spam words\nspam\n\n  buy now  \n#eggs\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	words, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"spam", "buy now"}; !slices.Equal(words, want) {
		t.Fatalf("read %q, want %q", words, want)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading a missing file: %v, want fs.ErrNotExist", err)
	}
}
