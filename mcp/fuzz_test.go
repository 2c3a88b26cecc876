package mcp

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
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
		`{"jsonrpc":"2.0","id":-0,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1,"result":{}}]`,
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
		// Every accepted numeric id reads back as the same number in any
		// JSON implementation: one spelling, within ±(2^53-1). Within a
		// batch, no two requests (or two answers) share an id.
		seen := map[string]bool{}
		for _, m := range msgs {
			if n, ok := m.id.(json.Number); ok {
				v, err := strconv.ParseInt(string(n), 10, 64)
				if err != nil || strconv.FormatInt(v, 10) != string(n) || v > maxSafeID || v < -maxSafeID {
					t.Fatalf("accepted id %s in %q", n, data)
				}
			}
			if m.kind != kindNotification {
				k := fmt.Sprint(m.kind, idKey(m.id))
				if seen[k] {
					t.Fatalf("accepted a batch repeating id %v: %q", m.id, data)
				}
				seen[k] = true
			}
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
