package mcp

import (
	"reflect"
	"testing"
)

// FuzzParseMessage checks that the parser never panics and that whatever it
// accepts re-encodes to bytes that parse to the same value, and are stable.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","n":1.5e3}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"a","result":{"tools":[]}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}]`,
		`{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\ud83d\ude00\u0041<&>"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"a":2}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
		`{"jsonrpc":"2.0","id":1,"method":"x"} []`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, batch, err := parseBody(data)
		if err != nil {
			return
		}
		var enc []byte
		if batch {
			enc = encodeBatch(msgs)
		} else {
			enc = msgs[0].encode()
		}
		again, batch2, err := parseBody(enc)
		if err != nil {
			t.Fatalf("re-encoding %q of %q does not parse: %v", enc, data, err)
		}
		if batch != batch2 || len(again) != len(msgs) {
			t.Fatalf("re-encoding changed the shape: %q -> %q", data, enc)
		}
		for i := range msgs {
			a, b := msgs[i], again[i]
			if !reflect.DeepEqual(a.obj, b.obj) || a.kind != b.kind || a.method != b.method || idKey(a.id) != idKey(b.id) {
				t.Fatalf("re-encoding changed message %d: %q -> %q", i, data, enc)
			}
			if string(b.encode()) != string(a.encode()) {
				t.Fatalf("encoding not stable: %q", enc)
			}
		}
	})
}
