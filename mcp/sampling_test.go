//lint:file-ignore SA1019 sampling is deprecated as of 2026-07-28 but older clients and servers still use it, and the proxy must carry it.

package mcp

import (
	"context"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestSamplingRequestFromServerReachesClient(t *testing.T) {
	r := newRig(t, nil) // SSE answers: the server's request rides the call's stream
	// A tool on the upstream that asks the client to sample.
	r.setPolicy(mustPolicy(t, `{"grants": [{"src": ["node:alice"], "dst": ["svc:charts"], "tools": ["ask"]}]}`))
	srv := sdk.NewServer(&sdk.Implementation{Name: "s", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "ask"}, func(ctx context.Context, req *sdk.CallToolRequest, _ echoIn) (*sdk.CallToolResult, any, error) {
		res, err := req.Session.CreateMessage(ctx, &sdk.CreateMessageParams{MaxTokens: 5, Messages: []*sdk.SamplingMessage{{Role: "user", Content: &sdk.TextContent{Text: "q"}}}})
		if err != nil {
			return nil, nil, err
		}
		return &sdk.CallToolResult{Content: []sdk.Content{res.Content}}, nil, nil
	})
	up := newUpstreamWith(t, srv)
	if err := r.proxy.SetService(Service{Name: "charts", URL: up}); err != nil {
		t.Fatal(err)
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, &sdk.ClientOptions{
		CreateMessageHandler: func(context.Context, *sdk.CreateMessageRequest) (*sdk.CreateMessageResult, error) {
			return &sdk.CreateMessageResult{Model: "m", Role: "assistant", Content: &sdk.TextContent{Text: "sampled"}}, nil
		},
	})
	cs, err := c.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: r.endpoint(), HTTPClient: httpFrom(t, "127.0.0.2")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "ask", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Content[0].(*sdk.TextContent).Text; got != "sampled" {
		t.Errorf("tool answered %q", got)
	}
}
