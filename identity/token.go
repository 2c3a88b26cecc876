package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Token is a join token. It carries a random ID (for lookup), a 32-byte
// random secret (the coordinator stores only its SHA-256, so a leaked store
// does not leak usable tokens), and the CA fingerprint so a new node can
// verify the coordinator without trust on first use.
type Token struct {
	ID     string      // 16 lowercase hex characters
	Secret [32]byte    // never stored by the coordinator
	CA     Fingerprint // of the trust domain's CA certificate
}

// Token string layout: "mcpmesh-1.<id>.<secret>.<ca>", where id is 16
// lowercase hex characters and secret and ca are raw (unpadded) base64url of
// 32 bytes each. Only [A-Za-z0-9._-] appear, so the token is one word that
// survives copy-paste and shells without quoting.
const (
	tokenPrefix   = "mcpmesh-1."
	tokenIDLen    = 16
	tokenMaxLen   = 256
	tokenFieldSep = "."
)

var tokenB64 = base64.RawURLEncoding.Strict()

// NewToken returns a token with a random ID and secret for the CA ca.
func NewToken(ca Fingerprint) (Token, error) {
	var id [tokenIDLen / 2]byte
	t := Token{CA: ca}
	if _, err := rand.Read(id[:]); err != nil {
		return Token{}, fmt.Errorf("identity: new token: %w", err)
	}
	if _, err := rand.Read(t.Secret[:]); err != nil {
		return Token{}, fmt.Errorf("identity: new token: %w", err)
	}
	t.ID = hex.EncodeToString(id[:])
	return t, nil
}

// String returns the token as one copy-pasteable word (see ParseToken). It
// contains the secret: print it only to the operator who asked for it.
func (t Token) String() string {
	return tokenPrefix + t.ID + tokenFieldSep + tokenB64.EncodeToString(t.Secret[:]) + tokenFieldSep + tokenB64.EncodeToString(t.CA[:])
}

// ParseToken parses the form written by Token.String. Leading and trailing
// whitespace is trimmed (people paste tokens); everything else is strict, so
// one token has exactly one spelling: any error wraps ErrMalformedToken and
// names the part that is wrong.
func ParseToken(s string) (Token, error) {
	if len(s) > tokenMaxLen {
		return Token{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformedToken, tokenMaxLen)
	}
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		if strings.HasPrefix(s, "mcpmesh-") {
			return Token{}, fmt.Errorf("%w: unsupported version (this build reads %q tokens)", ErrMalformedToken, tokenPrefix)
		}
		return Token{}, fmt.Errorf("%w: missing %q prefix", ErrMalformedToken, tokenPrefix)
	}
	fields := strings.Split(rest, tokenFieldSep)
	if len(fields) != 3 {
		return Token{}, fmt.Errorf("%w: want 3 fields after the prefix (id, secret, CA), got %d", ErrMalformedToken, len(fields))
	}
	var t Token
	if !isLowerHex(fields[0]) || len(fields[0]) != tokenIDLen {
		return Token{}, fmt.Errorf("%w: id: want %d lowercase hex characters", ErrMalformedToken, tokenIDLen)
	}
	t.ID = fields[0]
	if err := decodeField(t.Secret[:], fields[1]); err != nil {
		return Token{}, fmt.Errorf("%w: secret: %v", ErrMalformedToken, err)
	}
	if err := decodeField(t.CA[:], fields[2]); err != nil {
		return Token{}, fmt.Errorf("%w: CA fingerprint: %v", ErrMalformedToken, err)
	}
	return t, nil
}

// decodeField decodes raw base64url s into dst, which it must fill exactly.
// The alphabet is checked first because the decoder skips '\r' and '\n'.
func decodeField(dst []byte, s string) error {
	if len(s) != tokenB64.EncodedLen(len(dst)) {
		return fmt.Errorf("want %d base64url characters, got %d", tokenB64.EncodedLen(len(dst)), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return fmt.Errorf("character %q at %d is not base64url", c, i)
		}
	}
	n, err := tokenB64.Decode(dst, []byte(s))
	if err != nil {
		return err
	}
	if n != len(dst) {
		return fmt.Errorf("decodes to %d bytes, want %d", n, len(dst))
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// SecretHash returns SHA-256 of the secret, the only form of it the
// coordinator stores.
func (t Token) SecretHash() [32]byte {
	return sha256.Sum256(t.Secret[:])
}

// Matches reports, in constant time, whether the token's secret hashes to
// storedHash. A storedHash of the wrong length never matches.
func (t Token) Matches(storedHash []byte) bool {
	h := t.SecretHash()
	return subtle.ConstantTimeCompare(h[:], storedHash) == 1
}
