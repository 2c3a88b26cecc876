package stdioserve_test

import (
	"context"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/stdioserve"
)

// TestHelperStdioServer is the stdio MCP server under test (the official Go
// SDK over stdin/stdout), run as a child of the test binary.
func TestHelperStdioServer(t *testing.T) {
	if os.Getenv("MCPMESH_STDIO_CHILD") == "" {
		t.Skip("child process of TestStdioServerGivesEachSessionItsOwnProcess")
	}
	srv := sdk.NewServer(&sdk.Implementation{Name: "pid", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "pid"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strconv.Itoa(os.Getpid())}}}, nil, nil
	})
	_ = srv.Run(context.Background(), &sdk.StdioTransport{})
	os.Exit(0)
}

func TestStdioServerGivesEachSessionItsOwnProcess(t *testing.T) {
	t.Setenv("MCPMESH_STDIO_CHILD", "1")
	s, err := stdioserve.Start(os.Args[0]+" -test.run ^TestHelperStdioServer$", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pid := func(cs *sdk.ClientSession) string {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "pid"})
		if err != nil {
			t.Fatal(err)
		}
		return res.Content[0].(*sdk.TextContent).Text
	}
	var pids []string
	for range 2 {
		c := sdk.NewClient(&sdk.Implementation{Name: "c", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: s.URL(), MaxRetries: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		p := pid(cs)
		if again := pid(cs); again != p {
			t.Fatalf("one session reached two processes: %s then %s", p, again)
		}
		pids = append(pids, p)
	}
	if pids[0] == pids[1] {
		t.Fatalf("two sessions share process %s", pids[0])
	}
	if reflect.DeepEqual(pids, []string{strconv.Itoa(os.Getpid()), strconv.Itoa(os.Getpid())}) {
		t.Fatal("the tool ran in the test process, not a child")
	}
}

func TestSplitCommand(t *testing.T) {
	got, err := stdioserve.SplitCommand(`npx -y "@scope/server x" '/srv/my docs'`)
	if err != nil || !reflect.DeepEqual(got, []string{"npx", "-y", "@scope/server x", "/srv/my docs"}) {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := stdioserve.SplitCommand(`a "b`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
	if _, err := stdioserve.Start("/no/such/binary", nil); err == nil {
		t.Fatal("a missing command was accepted")
	}
}
