package bridge_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/bridge"
)

type echoArgs struct {
	Text string `json:"text"`
}

// upstream is a real MCP server (the Go SDK) over Streamable HTTP.
func upstream(t *testing.T, opts *sdk.StreamableHTTPOptions) *httptest.Server {
	t.Helper()
	srv := sdk.NewServer(&sdk.Implementation{Name: "echo", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "echo"}, func(_ context.Context, _ *sdk.CallToolRequest, in echoArgs) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: in.Text}}}, nil, nil
	})
	hs := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, opts))
	t.Cleanup(hs.Close)
	return hs
}

// TestStdioBridgeCarriesARealClientAndServer: the official SDK client
// speaks newline-delimited JSON-RPC to the bridge, as an MCP client that
// launched `mcpmesh connect` would, and reaches the server over HTTP, with
// SSE and with JSON answers.
func TestStdioBridgeCarriesARealClientAndServer(t *testing.T) {
	for _, jsonResp := range []bool{false, true} {
		hs := upstream(t, &sdk.StreamableHTTPOptions{JSONResponse: jsonResp})
		clientToBridge, bridgeIn := io.Pipe()
		bridgeOut, bridgeToClient := io.Pipe()
		b := &bridge.Stdio{Endpoint: hs.URL, HTTPClient: hs.Client(), In: clientToBridge, Out: bridgeToClient}
		done := make(chan error, 1)
		go func() { done <- b.Run(context.Background()); bridgeToClient.Close() }()

		c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := c.Connect(ctx, &sdk.IOTransport{Reader: bridgeOut, Writer: bridgeIn}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "over the bridge"}})
		if err != nil || res.Content[0].(*sdk.TextContent).Text != "over the bridge" {
			t.Fatalf("json=%v: call: %v %+v", jsonResp, err, res)
		}
		if _, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "nope"}); err == nil {
			t.Fatalf("json=%v: a call to an unknown tool succeeded", jsonResp)
		}
		s.Close()
		bridgeIn.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the bridge did not exit when its client went away")
		}
		cancel()
	}
}

func TestStdioBridgeTurnsHTTPFailuresIntoJSONRPCErrors(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"service \"ehr\" is not available to this node"}}`)
	}))
	defer hs.Close()
	var out strings.Builder
	b := &bridge.Stdio{Endpoint: hs.URL, HTTPClient: hs.Client(), In: strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"initialize","params":{}}` + "\n"), Out: &out}
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, `"id":7`) || !strings.Contains(got, `is not available to this node`) {
		t.Fatalf("client saw %q", got)
	}
}

func TestHTTPBridgeRefusesOtherOrigins(t *testing.T) {
	hs := upstream(t, nil)
	target, _ := url.Parse(hs.URL)
	h := (&bridge.HTTP{Target: target, Transport: hs.Client().Transport}).Handler()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	for _, c := range []struct {
		host, origin string
		ok           bool
	}{
		{"127.0.0.1:8811", "", true},
		{"localhost:8811", "http://localhost:8811", true},
		{"127.0.0.1:8811", "https://evil.example", false},
		{"evil.example:8811", "", false}, // DNS rebinding: the page's name resolves to 127.0.0.1
		{"127.0.0.1:8811", "null", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		r.Host = c.host
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got := w.Code == http.StatusOK; got != c.ok {
			t.Errorf("Host %s Origin %q: HTTP %d, want allowed=%v", c.host, c.origin, w.Code, c.ok)
		}
	}
}
