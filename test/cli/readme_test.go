package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEShowsOnlyFlagsThatExist keeps the README true: every flag it
// shows on an mcpmesh command line, in code blocks and in inline code
// (`up --tun`), is one the real binary's command takes, as its -h lists
// it. Flags after a lone -- (install-service) are checked against up's.
func TestREADMEShowsOnlyFlagsThatExist(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, env: os.Environ()}
	commands := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z-]+)  +`).FindAllStringSubmatch(c.run("-h").stderr, -1) {
		commands[m[1]] = true
	}
	if !commands["up"] || !commands["serve"] {
		t.Fatalf("no command list in mcpmesh -h (got %v)", commands)
	}
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if i := strings.Index(l, "mcpmesh "); i >= 0 && !strings.HasPrefix(l, "#") {
			lines = append(lines, cut(l[i+len("mcpmesh "):]))
		}
		for _, m := range regexp.MustCompile("`([a-z-]+ -[^`]*)`").FindAllStringSubmatch(l, -1) {
			if commands[strings.Fields(m[1])[0]] {
				lines = append(lines, m[1])
			}
		}
	}
	help := map[string]string{}
	usage := func(words []string) string {
		k := strings.Join(words, " ")
		if _, ok := help[k]; !ok {
			r := c.run(append(words, "-h")...)
			if r.code != 0 || !strings.HasPrefix(r.stderr, "Usage") {
				t.Fatalf("mcpmesh %s -h: exit %d: %s", k, r.code, r.stderr)
			}
			help[k] = r.stderr
		}
		return help[k]
	}
	checked := 0
	for _, l := range lines {
		words, flags := commandLine(l)
		if len(words) == 0 || !commands[words[0]] {
			continue
		}
		for _, f := range flags {
			cmd := words
			if f.afterDashes {
				cmd = []string{"up"}
			}
			if !strings.Contains(usage(cmd), "\n  -"+f.name+" ") && !strings.Contains(usage(cmd), "\n  -"+f.name+"\n") {
				t.Errorf("README shows `mcpmesh %s`, but `mcpmesh %s -h` has no -%s", l, strings.Join(cmd, " "), f.name)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d flags in the README: the scan is broken", checked)
	}
}

// cut ends a command line where the README's prose or shell goes on.
func cut(s string) string {
	if i := strings.IndexAny(s, "`#)|&"); i >= 0 {
		return s[:i]
	}
	return s
}

type flagUse struct {
	name        string
	afterDashes bool
}

// commandLine splits a command line into the words that name the command
// (and its positional arguments, which -h ignores) and the flags it uses.
func commandLine(l string) (words []string, flags []flagUse) {
	dashes := false
	for _, tok := range shellWords(l) {
		switch {
		case tok == "--":
			dashes = true
		case strings.HasPrefix(tok, "-"):
			name, _, _ := strings.Cut(strings.TrimLeft(tok, "-"), "=")
			flags = append(flags, flagUse{name, dashes})
		case len(flags) == 0 && !dashes && regexp.MustCompile(`^[a-z][a-z0-9.-]*$`).MatchString(tok):
			words = append(words, tok)
		}
	}
	return words, flags
}

// shellWords splits a line into words as a shell would for the README's
// commands: a double-quoted string is one word.
func shellWords(l string) []string {
	var out []string
	var w strings.Builder
	in, quoted := false, false
	for _, r := range l {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				out = append(out, w.String())
				w.Reset()
			}
			in = false
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, w.String())
	}
	return out
}
