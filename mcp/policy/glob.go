package policy

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// glob is a compiled pattern: `*` matches any run of characters (including
// none), `?` exactly one character, everything else itself. A pattern matches
// a whole name, never a part of it.
type glob struct {
	pat    string
	prefix string // literal bytes before the first wildcard, for a quick reject
	lit    bool   // no wildcard at all: plain string equality
}

// compileGlob validates a pattern. Empty patterns, "**" (which would suggest a
// path-aware meaning this language does not have), invalid UTF-8, spaces and
// control characters are refused.
func compileGlob(pat string) (glob, error) {
	if pat == "" {
		return glob{}, fmt.Errorf("bad glob %q: empty", pat)
	}
	if !utf8.ValidString(pat) {
		return glob{}, fmt.Errorf("bad glob %q: not valid UTF-8", pat)
	}
	if strings.Contains(pat, "**") {
		return glob{}, fmt.Errorf("bad glob %q: \"**\" is not supported, \"*\" already matches any run of characters", pat)
	}
	for _, r := range pat {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '\\' {
			return glob{}, fmt.Errorf("bad glob %q: illegal character %q", pat, r)
		}
	}
	i := strings.IndexAny(pat, "*?")
	if i < 0 {
		return glob{pat: pat, prefix: pat, lit: true}, nil
	}
	return glob{pat: pat, prefix: pat[:i]}, nil
}

// match reports whether the whole of s matches the pattern. It does not
// allocate and runs in O(len(pat)*len(s)) at worst.
func (g *glob) match(s string) bool {
	if g.lit {
		return s == g.pat
	}
	if !strings.HasPrefix(s, g.prefix) {
		return false
	}
	return matchGlob(g.pat[len(g.prefix):], s[len(g.prefix):])
}

// matchGlob is the classic backtracking matcher that remembers only the last
// star: enough because `*` is the only variable-length wildcard.
func matchGlob(pat, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, -1
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			switch c := pat[px]; c {
			case '*':
				starPx, starSx = px, sx
				px++
				continue
			case '?':
				if sx < len(s) {
					_, n := utf8.DecodeRuneInString(s[sx:])
					px++
					sx += n
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if starPx >= 0 && starSx < len(s) {
			_, n := utf8.DecodeRuneInString(s[starSx:])
			starSx += n
			px, sx = starPx+1, starSx
			continue
		}
		return false
	}
	return true
}
