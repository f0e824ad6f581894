package rooms

import (
	"regexp"
	"strings"
	"testing"
)

func TestPatternsMatchRoomsByWildcard(t *testing.T) {
	p := Patterns{"team-*", "lobby", "room-?"}
	for name, want := range map[string]bool{
		"team-a": true, "team-": true, "team": false, "lobby": true, "lobby2": false,
		"room-1": true, "room-12": false, "xteam-a": false,
	} {
		if got := p.Match(name); got != want {
			t.Errorf("%v.Match(%q) = %v, want %v", p, name, got, want)
		}
	}
	if (Patterns{"*"}).Match("anything.at_all-1") != true {
		t.Error("* does not match every name")
	}
	if (Patterns{"[a]*", `\a`, ""}).Match("a") {
		t.Error("an invalid pattern matched")
	}
}

// FuzzPatternMatch checks Match against the regular expression a pattern
// stands for.
func FuzzPatternMatch(f *testing.F) {
	f.Add("team-*", "team-a")
	f.Add("*a*b?", "xxaxxbc")
	f.Add("[", "[")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := Patterns{pattern}.Match(name)
		if !ValidPattern(pattern) {
			if got {
				t.Fatalf("invalid pattern %q matched %q", pattern, name)
			}
			return
		}
		re := "^" + strings.NewReplacer("*", ".*", "?", ".", ".", `\.`).Replace(pattern) + "$"
		if want := regexp.MustCompile(re).MatchString(name) && !strings.Contains(name, "/"); got != want && ValidName(name) {
			t.Fatalf("%q.Match(%q) = %v, want %v", pattern, name, got, want)
		}
	})
}
