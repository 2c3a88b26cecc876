package mcp

import (
	"context"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// modes runs f against an upstream answering in plain JSON and in SSE.
func modes(t *testing.T, f func(t *testing.T, r *rig)) {
	for _, jsonResp := range []bool{true, false} {
		name := "sse"
		if jsonResp {
			name = "json"
		}
		t.Run(name, func(t *testing.T) {
			f(t, newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: jsonResp}))
		})
	}
}

func toolNames(t *testing.T, cs *sdk.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func TestToolCallsDecidedAndListFiltered(t *testing.T) {
	modes(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		cs := r.mustConnect(t, "127.0.0.2", "")
		if got, want := toolNames(t, cs), []string{"echo", "read_chart"}; !slices.Equal(got, want) {
			t.Errorf("tools/list = %v, want %v", got, want)
		}
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
		if err != nil || res.IsError {
			t.Fatalf("allowed echo: %v %+v", err, res)
		}
		if got := res.Content[0].(*sdk.TextContent).Text; got != "echo:hi" {
			t.Errorf("echo = %q", got)
		}
		_, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"text": "x"}})
		if err == nil {
			t.Fatal("delete_chart allowed")
		}
		want := `tool "delete_chart" denied for spiffe://td/node/alice: no grant matches (default deny)`
		if !strings.Contains(err.Error(), want) {
			t.Errorf("denial = %v, want it to contain %q", err, want)
		}
		if n := r.up.count("delete_chart"); n != 0 {
			t.Errorf("upstream ran delete_chart %d times", n)
		}
		if n := r.up.count("echo"); n != 1 {
			t.Errorf("upstream ran echo %d times, want 1", n)
		}
		// The session still works after a denial.
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "read_chart", Arguments: map[string]any{"text": "y"}}); err != nil {
			t.Errorf("read_chart after a denial: %v", err)
		}
	})
}

func TestResourcesAndPromptsFilteredAndDecided(t *testing.T) {
	modes(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		cs := r.mustConnect(t, "127.0.0.2", "")
		rl, err := cs.ListResources(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(rl.Resources) != 1 || rl.Resources[0].URI != "file:///docs/a.txt" {
			t.Errorf("resources/list = %+v", rl.Resources)
		}
		if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "file:///docs/a.txt"}); err != nil {
			t.Errorf("allowed read: %v", err)
		}
		if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "file:///secret/b.txt"}); err == nil || !strings.Contains(err.Error(), "denied") {
			t.Errorf("secret read: %v", err)
		}
		if n := r.up.count("file:///secret/b.txt"); n != 0 {
			t.Errorf("upstream read the secret %d times", n)
		}
		pl, err := cs.ListPrompts(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pl.Prompts) != 1 || pl.Prompts[0].Name != "greet" {
			t.Errorf("prompts/list = %+v", pl.Prompts)
		}
		if _, err := cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: "greet"}); err != nil {
			t.Errorf("greet: %v", err)
		}
		if _, err := cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: "secret_prompt"}); err == nil {
			t.Error("secret_prompt allowed")
		}
		if n := r.up.count("secret_prompt"); n != 0 {
			t.Errorf("upstream ran secret_prompt %d times", n)
		}
	})
}

func TestCallerWithoutGrantDeniedAtInitialize(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	if _, err := r.connect(t, "127.0.0.4", ""); err == nil || !strings.Contains(err.Error(), "reach svc:charts") {
		t.Errorf("carol connected: %v", err)
	}
	// An address WhoIs does not know is refused with 403.
	a := r.post(t, "127.0.0.5", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
	if a.status != 403 {
		t.Errorf("unknown address: %d %s", a.status, a.body)
	}
	if p := r.up.posts.Load(); p != 0 {
		t.Errorf("upstream saw %d POSTs", p)
	}
}

func TestConditionalGrantUsesArguments(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	cs := r.mustConnect(t, "127.0.0.3", "")
	if got := toolNames(t, cs); !slices.Equal(got, []string{"get_invoice"}) {
		t.Errorf("bob's tools = %v", got)
	}
	ctx := context.Background()
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "get_invoice", Arguments: map[string]any{"amount": 12}}); err != nil {
		t.Errorf("small invoice: %v", err)
	}
	_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "get_invoice", Arguments: map[string]any{"amount": 50000}})
	if err == nil || !strings.Contains(err.Error(), "when condition false") {
		t.Errorf("large invoice: %v", err)
	}
	if n := r.up.count("get_invoice"); n != 1 {
		t.Errorf("get_invoice ran %d times, want 1", n)
	}
}

func TestSessionOfAnotherIdentityRefused(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	sid := r.rawSession(t, "127.0.0.2", "2025-03-26")
	posts := r.up.posts.Load()
	// bob can reach the service but not alice's session.
	a := r.post(t, "127.0.0.3", `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_invoice","arguments":{"amount":1}}}`,
		map[string]string{"Mcp-Session-Id": sid})
	if a.status != 404 {
		t.Errorf("bob with alice's session: %d %s", a.status, a.body)
	}
	a = r.post(t, "127.0.0.3", `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, map[string]string{"Mcp-Session-Id": sid})
	if a.status != 404 {
		t.Errorf("bob listing in alice's session: %d %s", a.status, a.body)
	}
	if got := r.up.posts.Load(); got != posts {
		t.Errorf("upstream saw %d more POSTs", got-posts)
	}
	// alice still can.
	a = r.post(t, "127.0.0.2", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}}`,
		map[string]string{"Mcp-Session-Id": sid})
	if m := a.byID(6); a.status != 200 || m == nil || m["result"] == nil {
		t.Errorf("alice in her session: %d %s", a.status, a.body)
	}
}
