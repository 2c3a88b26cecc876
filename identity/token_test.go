package identity_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/identity"
)

func newToken(t testing.TB) identity.Token {
	t.Helper()
	tok, err := identity.NewToken(newCA(t, "mesh.example", t0).Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	tok := newToken(t)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(tok.ID) {
		t.Errorf("ID = %q", tok.ID)
	}
	s := tok.String()
	if !regexp.MustCompile(`^mcpmesh-1\.[A-Za-z0-9._-]+$`).MatchString(s) {
		t.Errorf("String = %q is not one shell-safe word", s)
	}
	for _, in := range []string{s, "  " + s + "\n", "\t" + s + "\r\n"} {
		got, err := identity.ParseToken(in)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", in, err)
		}
		if got != tok {
			t.Errorf("ParseToken(%q) = %+v, want %+v", in, got, tok)
		}
	}
	if other := newToken(t); other.ID == tok.ID || other.Secret == tok.Secret {
		t.Error("two tokens share an ID or a secret")
	}
}

func TestTokenSecretHashMatches(t *testing.T) {
	tok := newToken(t)
	h := tok.SecretHash()
	if !tok.Matches(h[:]) {
		t.Error("token does not match its own hash")
	}
	if newToken(t).Matches(h[:]) {
		t.Error("another token matches")
	}
	if tok.Matches(h[:31]) || tok.Matches(nil) {
		t.Error("a truncated hash matches")
	}
	if h == tok.Secret {
		t.Error("SecretHash returns the secret")
	}
}

func TestParseTokenRejectsMalformed(t *testing.T) {
	s := newToken(t).String()
	parts := strings.Split(s, ".") // "mcpmesh-1", id, secret, ca
	id, secret, ca := parts[1], parts[2], parts[3]
	join := func(p ...string) string { return strings.Join(p, ".") }
	flip := func(f string, i int, c byte) string { b := []byte(f); b[i] = c; return string(b) }
	for name, tc := range map[string]struct{ in, part string }{
		"empty":              {"", "prefix"},
		"no prefix":          {join(id, secret, ca), "prefix"},
		"other version":      {join("mcpmesh-2", id, secret, ca), "version"},
		"uppercase prefix":   {join("MCPMESH-1", id, secret, ca), "prefix"},
		"too few fields":     {join("mcpmesh-1", id, secret), "fields"},
		"too many fields":    {join("mcpmesh-1", id, secret, ca, "x"), "fields"},
		"trailing dot":       {s + ".", "fields"},
		"short id":           {join("mcpmesh-1", id[:15], secret, ca), "id"},
		"long id":            {join("mcpmesh-1", id+"0", secret, ca), "id"},
		"uppercase id":       {join("mcpmesh-1", strings.ToUpper("abcdefabcdefabcd"), secret, ca), "id"},
		"non-hex id":         {join("mcpmesh-1", flip(id, 0, 'g'), secret, ca), "id"},
		"short secret":       {join("mcpmesh-1", id, secret[:42], ca), "secret"},
		"long secret":        {join("mcpmesh-1", id, secret+"A", ca), "secret"},
		"padded secret":      {join("mcpmesh-1", id, secret+"=", ca), "secret"},
		"std base64 secret":  {join("mcpmesh-1", id, flip(secret, 3, '+'), ca), "secret"},
		"newline in secret":  {join("mcpmesh-1", id, flip(secret, 3, '\n'), ca), "secret"},
		"non-canonical tail": {join("mcpmesh-1", id, flip(secret, 42, nonCanonical(secret[42])), ca), "secret"},
		"short CA":           {join("mcpmesh-1", id, secret, ca[:10]), "CA"},
		"bad CA char":        {join("mcpmesh-1", id, secret, flip(ca, 5, '!')), "CA"},
		"inner space":        {join("mcpmesh-1", id, secret, ca) + " x", "CA"},
		"over 256 bytes":     {s + strings.Repeat(" ", 256), "256"},
	} {
		_, err := identity.ParseToken(tc.in)
		if !errors.Is(err, identity.ErrMalformedToken) {
			t.Errorf("%s: err = %v, want ErrMalformedToken", name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.part) {
			t.Errorf("%s: error %q does not name %q", name, err, tc.part)
		}
	}
}

// nonCanonical returns a base64url character that differs from c only in the
// low bits, which a 32-byte value never uses in its last character.
func nonCanonical(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return alphabet[i|1]
}

func FuzzParseToken(f *testing.F) {
	tok := newToken(f)
	s := tok.String()
	f.Add(s)
	f.Add(" " + s + "\n")
	f.Add(s[:len(s)-1])
	f.Add(s + "A")
	f.Add(strings.Replace(s, "mcpmesh-1", "mcpmesh-2", 1))
	f.Add(strings.ReplaceAll(s, ".", ".."))
	f.Add("mcpmesh-1...")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := identity.ParseToken(in)
		if err != nil {
			if !errors.Is(err, identity.ErrMalformedToken) {
				t.Fatalf("ParseToken(%q): error %v does not wrap ErrMalformedToken", in, err)
			}
			return
		}
		again, err := identity.ParseToken(got.String())
		if err != nil {
			t.Fatalf("ParseToken(%q) accepted, but its String %q does not parse: %v", in, got.String(), err)
		}
		if again != got {
			t.Fatalf("ParseToken(%q) = %+v, re-encoded parses to %+v", in, got, again)
		}
		if got.String() != strings.TrimSpace(in) {
			t.Fatalf("ParseToken(%q) accepted a second spelling of %q", in, got.String())
		}
	})
}
