package mcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"
)

// decodeStrictReference is the decoder strictParser replaced, built on
// encoding/json's Token: the differential fuzz test holds the fast parser
// to its answers.
func decodeStrictReference(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: invalid UTF-8", errParse)
	}
	if err := checkSurrogates(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := referenceValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the message", errParse)
	}
	return v, nil
}

func referenceValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: %v", errParse, err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", errParse, maxDepth)
	}
	switch d {
	case '{':
		obj := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("%w: %v", errParse, err)
			}
			k, ok := kt.(string)
			if !ok {
				return nil, fmt.Errorf("%w: object key is not a string", errParse)
			}
			if _, dup := obj[k]; dup {
				return nil, fmt.Errorf("%w: duplicate key %q", errParse, k)
			}
			v, err := referenceValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			obj[k] = v
		}
		if _, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("%w: %v", errParse, err)
		}
		return obj, nil
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := referenceValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("%w: %v", errParse, err)
		}
		return arr, nil
	}
	return nil, fmt.Errorf("%w: unexpected %v", errParse, d)
}

// FuzzStrictParserMatchesReference: for any bytes, the single-pass parser
// and the encoding/json-based reference accept the same inputs and decode
// them to the same values.
func FuzzStrictParserMatchesReference(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi \u00e9 \ud83d\ude00 \n"}}}`,
		`[1, -0.5e+10, true, false, null, "x", {}, []]`,
		`{"a":1,"a":2}`, `{"a":1}}`, `  "s"  `, `01`, `1.`, `-`, `1e`, `"\x"`, `"\u12"`, `{"a" 1}`, `[1,]`, `{,}`,
		`"\ud800"`, `"\udc00\ud800"`, "\"\t\"", `[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`, ``, ` `, `nul`, `truex`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, gerr := decodeStrict(data)
		want, werr := decodeStrictReference(data)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: fast parser error %v, reference error %v", data, gerr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast parser %#v, reference %#v", data, got, want)
		}
	})
}

// BenchmarkStrictParser compares the single-pass parser with the reference
// on a typical tools/call message.
func BenchmarkStrictParser(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"read_chart","arguments":{"patient":"p-0042","fields":["bp","hr","notes"],"limit":25},"_meta":{"progressToken":"t-17"}}}`)
	b.Run("single-pass", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeStrict(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeStrictReference(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// encodeValueReference is the encoder encodeValue replaced.
func encodeValueReference(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// FuzzEncodeValueMatchesReference: whatever the strict parser accepts is
// re-encoded byte for byte as encoding/json encodes it (audit digests of
// arguments depend on that), and re-parses to the same value.
func FuzzEncodeValueMatchesReference(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":[true,false,null,"x\u2028y\u0001\t<&>"],"c":{"z":-0.5e3,"":""}}`,
		`"\ud83d\ude00 \u007f \\ \" \b\f\n\r"`, `[]`, `{}`, `12345678901234567890`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeStrict(data)
		if err != nil {
			return
		}
		got, want := encodeValue(v), encodeValueReference(v)
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: encodeValue %q, encoding/json %q", data, got, want)
		}
	})
}

func TestEncodeValueMatchesReferenceOnOtherStrings(t *testing.T) {
	for _, s := range []string{"\xff", "a\xc3", "\u2028\u2029", "\x00\x1f\x7f", "é€😀"} {
		if got, want := encodeValue(s), encodeValueReference(s); !bytes.Equal(got, want) {
			t.Errorf("%q: encodeValue %q, encoding/json %q", s, got, want)
		}
	}
	v := map[string]any{"code": -32001, "n": 1.5, "list": []string{"a"}}
	if got, want := encodeValue(v), encodeValueReference(v); !bytes.Equal(got, want) {
		t.Errorf("fallback types: encodeValue %q, encoding/json %q", got, want)
	}
}
