package mcp

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// strictParser decodes one JSON value in a single pass over the bytes:
// objects become map[string]any (a duplicate key is an error), arrays
// []any, numbers json.Number, and nesting deeper than maxDepth is an
// error. It replaced a decoder built on encoding/json's Token, which the
// proxy's CPU profile showed as the largest item of its own code (about a
// tenth of the proxy's CPU per call); a differential fuzz test holds the
// two to the same answers.
//
// The caller has checked that the input is valid UTF-8 and carries no
// lone-surrogate escapes (decodeStrict does both first).
type strictParser struct {
	data []byte
	i    int
}

func (p *strictParser) fail(format string, args ...any) error {
	return fmt.Errorf("%w: "+format+" at offset %d", append([]any{errParse}, append(args, p.i)...)...)
}

func (p *strictParser) skipSpace() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value parses the value at p.i; depth counts the containers around it.
func (p *strictParser) value(depth int) (any, error) {
	p.skipSpace()
	if p.i >= len(p.data) {
		return nil, fmt.Errorf("%w: unexpected end of input", errParse)
	}
	switch c := p.data[p.i]; {
	case c == '{':
		if depth >= maxDepth {
			return nil, fmt.Errorf("%w: nested deeper than %d", errParse, maxDepth)
		}
		return p.object(depth)
	case c == '[':
		if depth >= maxDepth {
			return nil, fmt.Errorf("%w: nested deeper than %d", errParse, maxDepth)
		}
		return p.array(depth)
	case c == '"':
		return p.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	default:
		return nil, p.fail("invalid character %q", c)
	}
}

func (p *strictParser) literal(lit string) error {
	if !strings.HasPrefix(string(p.data[p.i:min(p.i+len(lit), len(p.data))]), lit) {
		return p.fail("invalid literal")
	}
	p.i += len(lit)
	return nil
}

func (p *strictParser) object(depth int) (any, error) {
	p.i++ // {
	obj := map[string]any{}
	p.skipSpace()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		return obj, nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			if p.i >= len(p.data) {
				return nil, fmt.Errorf("%w: unexpected end of input", errParse)
			}
			return nil, fmt.Errorf("%w: object key is not a string", errParse)
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := obj[k]; dup {
			return nil, fmt.Errorf("%w: duplicate key %q", errParse, k)
		}
		p.skipSpace()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return nil, p.fail("expected ':' after object key")
		}
		p.i++
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		obj[k] = v
		if done, err := p.afterMember('}', "object"); err != nil {
			return nil, err
		} else if done {
			return obj, nil
		}
	}
}

func (p *strictParser) array(depth int) (any, error) {
	p.i++ // [
	arr := []any{}
	p.skipSpace()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		return arr, nil
	}
	for {
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		if done, err := p.afterMember(']', "array"); err != nil {
			return nil, err
		} else if done {
			return arr, nil
		}
	}
}

// afterMember reads what follows a member of an object or array: a comma
// (more follow) or the closing bracket (done).
func (p *strictParser) afterMember(closing byte, what string) (done bool, err error) {
	p.skipSpace()
	if p.i >= len(p.data) {
		return false, fmt.Errorf("%w: unexpected end of input", errParse)
	}
	switch p.data[p.i] {
	case ',':
		p.i++
		return false, nil
	case closing:
		p.i++
		return true, nil
	}
	return false, p.fail("expected ',' or '" + string(closing) + "' in " + what)
}

// number checks the JSON number grammar and returns the literal.
func (p *strictParser) number() (any, error) {
	start := p.i
	d := p.data
	if p.i < len(d) && d[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(d) && d[p.i] == '0':
		p.i++
	case p.i < len(d) && d[p.i] >= '1' && d[p.i] <= '9':
		for p.i < len(d) && d[p.i] >= '0' && d[p.i] <= '9' {
			p.i++
		}
	default:
		return nil, p.fail("invalid number")
	}
	if p.i < len(d) && d[p.i] == '.' {
		p.i++
		if p.i >= len(d) || d[p.i] < '0' || d[p.i] > '9' {
			return nil, p.fail("invalid number")
		}
		for p.i < len(d) && d[p.i] >= '0' && d[p.i] <= '9' {
			p.i++
		}
	}
	if p.i < len(d) && (d[p.i] == 'e' || d[p.i] == 'E') {
		p.i++
		if p.i < len(d) && (d[p.i] == '+' || d[p.i] == '-') {
			p.i++
		}
		if p.i >= len(d) || d[p.i] < '0' || d[p.i] > '9' {
			return nil, p.fail("invalid number")
		}
		for p.i < len(d) && d[p.i] >= '0' && d[p.i] <= '9' {
			p.i++
		}
	}
	return json.Number(d[start:p.i]), nil
}

// str parses a string at p.i (at its opening quote).
func (p *strictParser) str() (string, error) {
	p.i++ // "
	start := p.i
	d := p.data
	// Fast path: no escapes.
	for p.i < len(d) {
		c := d[p.i]
		switch {
		case c == '"':
			s := string(d[start:p.i])
			p.i++
			return s, nil
		case c == '\\':
			return p.strEscaped(start)
		case c < 0x20:
			return "", p.fail("control character in string")
		}
		p.i++
	}
	return "", fmt.Errorf("%w: unexpected end of input", errParse)
}

func (p *strictParser) strEscaped(start int) (string, error) {
	d := p.data
	buf := make([]byte, 0, p.i-start+16)
	buf = append(buf, d[start:p.i]...)
	for p.i < len(d) {
		c := d[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.fail("control character in string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(d) {
			break
		}
		e := d[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(d, p.i)
			if !ok {
				return "", p.fail("invalid \\u escape")
			}
			p.i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if p.i+1 < len(d) && d[p.i] == '\\' && d[p.i+1] == 'u' {
					r2, ok = hex4(d, p.i+2)
				}
				dec := utf16.DecodeRune(r, r2)
				if !ok || dec == utf8.RuneError {
					return "", p.fail("lone surrogate escape")
				}
				p.i += 6
				r = dec
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.fail("invalid escape \\%c", e)
		}
	}
	return "", fmt.Errorf("%w: unexpected end of input", errParse)
}
