package mcp

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// An upstream (or a compressing middleware in front of it) that answers
// compressed, asked or not, would have the proxy pass on lists it cannot
// filter. The proxy refuses such answers instead.
func TestCompressedAnswersAreRefusedNotPassedOn(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_chart"}]}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write([]byte(list))
		zw.Close()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(z.Bytes())
	}))
	defer up.Close()
	r := newRigTo(t, up.URL+"/mcp")
	req, _ := http.NewRequest(http.MethodPost, r.endpoint(), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Accept-Encoding", "gzip") // the caller may ask; the proxy does not pass it on
	resp, err := httpFrom(t, "127.0.0.2").Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("status %d, Content-Encoding %q; want 502 and none", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if !strings.Contains(string(body), `Content-Encoding \"gzip\"`) || strings.Contains(string(body), "delete_chart") {
		t.Fatalf("answer = %s", body)
	}
}
