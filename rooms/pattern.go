package rooms

import "path"

// ValidPattern reports whether pattern is a pattern of room names: the
// characters of a name, where * stands for any run of them and ? for one.
func ValidPattern(pattern string) bool {
	if pattern == "" || len(pattern) > 64 {
		return false
	}
	for i := 0; i < len(pattern); i++ {
		if c := pattern[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' && c != '*' && c != '?' {
			return false
		}
	}
	return true
}

// Patterns are patterns of room names, such as team-* or lobby.
type Patterns []string

// Match reports whether name matches any of the patterns. A pattern that
// is not valid matches nothing.
func (p Patterns) Match(name string) bool {
	for _, pattern := range p {
		// Without [ and \, which ValidPattern keeps out, path.Match
		// never fails, and names have no / for * to stop at.
		if ok, _ := path.Match(pattern, name); ok && ValidPattern(pattern) {
			return true
		}
	}
	return false
}
