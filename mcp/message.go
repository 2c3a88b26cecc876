package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds the nesting of arrays and objects in one message.
const maxDepth = 64

// msgKind says what a JSON-RPC message is.
type msgKind int

const (
	kindCall         msgKind = iota // a request with an id
	kindNotification                // a request without an id
	kindResponse                    // a result or an error
)

// message is one JSON-RPC message as the proxy decoded and decided it. obj is
// the whole decoded object; what is forwarded is its re-encoding. Numbers are
// json.Number, so their literal survives re-encoding.
type message struct {
	obj    map[string]any
	kind   msgKind
	method string         // requests only
	id     any            // string or json.Number; nil for notifications
	params map[string]any // nil when absent
}

// maxIDBytes bounds a string id. Ids are kept while their requests are in
// flight, so their size is the caller's to choose only within reason; MCP
// clients use counters and UUIDs.
const maxIDBytes = 256

// maxSafeID is the largest integer every JSON implementation represents
// exactly (2^53-1). The Go SDK decodes ids through float64: beyond this, two
// different literals come back as the same id.
const maxSafeID = 1<<53 - 1

// checkNumericID accepts an integer id only in the one spelling that every
// peer reads back as the same number: no fraction, exponent or "-0", and
// within ±maxSafeID. The proxy keys what it remembers about a request by
// the id's literal, and the upstream answers with its own reading of it;
// two spellings of one number (-0 and 0, or 2^53 and 2^53+1 after rounding)
// would let an answer be taken for another request's.
func checkNumericID(x json.Number) error {
	n, err := strconv.ParseInt(string(x), 10, 64)
	if err != nil {
		return fmt.Errorf("mcp: invalid request: id %s is not an integer", x)
	}
	if n > maxSafeID || n < -maxSafeID {
		return fmt.Errorf("mcp: invalid request: id %s is outside ±(2^53-1), where JSON numbers stop being exact", x)
	}
	if strconv.FormatInt(n, 10) != string(x) {
		return fmt.Errorf("mcp: invalid request: id %s is not written as a plain integer", x)
	}
	return nil
}

// idKey returns a comparable key for a JSON-RPC id ("" for none), so that a
// numeric 1 and a string "1" never collide.
func idKey(id any) string {
	switch v := id.(type) {
	case string:
		return "s" + v
	case json.Number:
		return "n" + string(v)
	}
	return ""
}

// errParse is wrapped by every syntax-level failure (JSON-RPC code -32700);
// other parse failures are invalid requests (-32600).
var errParse = errors.New("mcp: parse error")

// parseBody decodes an HTTP request body: one message, or (batch true) a
// non-empty array of messages. It accepts only valid UTF-8 without lone
// surrogate escapes, no duplicate object keys at any depth, no trailing data,
// nesting up to maxDepth, and messages that are well-formed JSON-RPC 2.0.
func parseBody(data []byte) (msgs []*message, batch bool, err error) {
	v, err := decodeStrict(data)
	if err != nil {
		return nil, false, err
	}
	if arr, ok := v.([]any); ok {
		if len(arr) == 0 {
			return nil, true, errors.New("mcp: empty batch")
		}
		msgs = make([]*message, 0, len(arr))
		// Requests, and answers to the server's requests, each need ids
		// unique within the batch: answers are matched to requests by id,
		// and two requests under one id would share one answer, which the
		// proxy could then filter as the wrong one.
		seen := map[msgKind]map[string]bool{kindCall: {}, kindResponse: {}}
		for i, e := range arr {
			m, err := toMessage(e)
			if err != nil {
				return nil, true, fmt.Errorf("batch element %d: %w", i, err)
			}
			if ids := seen[m.kind]; ids != nil {
				k := idKey(m.id)
				if ids[k] {
					return nil, true, fmt.Errorf("mcp: invalid request: batch element %d repeats id %s", i, encodeValue(m.id))
				}
				ids[k] = true
			}
			msgs = append(msgs, m)
		}
		return msgs, true, nil
	}
	m, err := toMessage(v)
	if err != nil {
		return nil, false, err
	}
	return []*message{m}, false, nil
}

// encode returns the bytes the proxy forwards for m: its decoded object
// re-encoded, with object keys sorted.
func (m *message) encode() []byte { return encodeValue(m.obj) }

// encodeValue encodes a decoded value without HTML escaping, byte for byte
// as encoding/json does (keys sorted, the same string escapes), which a
// differential fuzz test holds it to; the audit's argument digests depend on
// that. It walks the types decodeStrict produces itself and hands anything
// else to encoding/json.
func encodeValue(v any) []byte {
	return appendValue(make([]byte, 0, 256), v)
}

func appendValue(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		if t {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case string:
		return appendString(b, t)
	case json.Number:
		if t == "" {
			return append(b, '0') // as encoding/json writes an empty Number
		}
		return append(b, t...)
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, t[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, ']')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Values come from decodeStrict or the proxy's own answers and
		// hold only encodable types.
		panic(fmt.Sprintf("mcp: encoding a decoded value: %v", err))
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// appendString quotes s as encoding/json does with HTML escaping off.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// encodeBatch encodes messages as a JSON array.
func encodeBatch(msgs []*message) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(m.encode())
	}
	b.WriteByte(']')
	return b.Bytes()
}

func toMessage(v any) (*message, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("mcp: invalid request: a message must be a JSON object")
	}
	m := &message{obj: obj}
	for k := range obj {
		switch k {
		case "jsonrpc", "id", "method", "params", "result", "error":
		default:
			return nil, fmt.Errorf("mcp: invalid request: unknown member %q", k)
		}
	}
	if obj["jsonrpc"] != "2.0" {
		return nil, errors.New(`mcp: invalid request: jsonrpc must be "2.0"`)
	}
	id, hasID := obj["id"]
	if hasID {
		switch x := id.(type) {
		case string:
			if len(x) > maxIDBytes {
				return nil, fmt.Errorf("mcp: invalid request: id longer than %d bytes", maxIDBytes)
			}
		case json.Number:
			if err := checkNumericID(x); err != nil {
				return nil, err
			}
		case nil:
		default:
			return nil, errors.New("mcp: invalid request: id must be a string or an integer")
		}
		m.id = id
	}
	if mv, ok := obj["method"]; ok {
		method, ok := mv.(string)
		if !ok || method == "" {
			return nil, errors.New("mcp: invalid request: method must be a non-empty string")
		}
		if _, ok := obj["result"]; ok {
			return nil, errors.New("mcp: invalid request: a request cannot carry a result")
		}
		if _, ok := obj["error"]; ok {
			return nil, errors.New("mcp: invalid request: a request cannot carry an error")
		}
		m.method = method
		m.kind = kindNotification
		if hasID {
			if id == nil {
				return nil, errors.New("mcp: invalid request: a request id cannot be null")
			}
			m.kind = kindCall
		}
		if p, ok := obj["params"]; ok {
			po, ok := p.(map[string]any)
			if !ok {
				return nil, errors.New("mcp: invalid request: params must be an object")
			}
			m.params = po
		}
		return m, nil
	}
	// A response.
	if _, ok := obj["params"]; ok {
		return nil, errors.New("mcp: invalid request: a response cannot carry params")
	}
	if !hasID {
		return nil, errors.New("mcp: invalid request: a message needs a method or an id")
	}
	res, hasRes := obj["result"]
	e, hasErr := obj["error"]
	switch {
	case hasRes == hasErr:
		return nil, errors.New("mcp: invalid request: a response needs exactly one of result and error")
	case hasRes:
		if id == nil {
			return nil, errors.New("mcp: invalid request: a result needs a non-null id")
		}
		if _, ok := res.(map[string]any); !ok {
			return nil, errors.New("mcp: invalid request: result must be an object")
		}
	default:
		eo, ok := e.(map[string]any)
		if !ok {
			return nil, errors.New("mcp: invalid request: error must be an object")
		}
		code, ok := eo["code"].(json.Number)
		if !ok {
			return nil, errors.New("mcp: invalid request: error code must be an integer")
		}
		if _, err := strconv.ParseInt(string(code), 10, 64); err != nil {
			return nil, errors.New("mcp: invalid request: error code must be an integer")
		}
		if _, ok := eo["message"].(string); !ok {
			return nil, errors.New("mcp: invalid request: error message must be a string")
		}
	}
	m.kind = kindResponse
	return m, nil
}

// decodeStrict decodes one JSON value. Objects become map[string]any,
// numbers json.Number.
func decodeStrict(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: invalid UTF-8", errParse)
	}
	if err := checkSurrogates(data); err != nil {
		return nil, err
	}
	p := strictParser{data: data}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.i != len(data) {
		return nil, fmt.Errorf("%w: trailing data after the message", errParse)
	}
	return v, nil
}

// checkSurrogates rejects \u escapes of lone UTF-16 surrogates, which
// decoders disagree about (replaced, rejected or passed through).
func checkSurrogates(data []byte) error {
	inStr := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inStr {
			if c == '"' {
				inStr = true
			}
			continue
		}
		switch c {
		case '"':
			inStr = false
		case '\\':
			if i+1 >= len(data) {
				return nil // the decoder reports the syntax error
			}
			if data[i+1] != 'u' {
				i++
				continue
			}
			r, ok := hex4(data, i+2)
			if !ok {
				return nil
			}
			i += 5
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return fmt.Errorf("%w: lone surrogate escape", errParse)
			case r >= 0xD800 && r <= 0xDBFF:
				if i+2 >= len(data) || data[i+1] != '\\' || data[i+2] != 'u' {
					return fmt.Errorf("%w: lone surrogate escape", errParse)
				}
				lo, ok := hex4(data, i+3)
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return fmt.Errorf("%w: lone surrogate escape", errParse)
				}
				i += 6
			}
		}
	}
	return nil
}

func hex4(data []byte, at int) (rune, bool) {
	if at+4 > len(data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(data[at:at+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(n), true
}
