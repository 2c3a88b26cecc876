package mcp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The proxy fails closed on its audit trail: a call it cannot record is
// never forwarded.
func TestCallRefusedWhenAuditCannotBeRecorded(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	cs := r.mustConnect(t, "127.0.0.2", "")
	ctx := context.Background()
	r.mu.Lock()
	r.auditErr = errors.New("disk full")
	r.mu.Unlock()
	_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
	if err == nil || !strings.Contains(err.Error(), "cannot record an audit event") || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("call without an audit record: %v", err)
	}
	if n := r.up.count("echo"); n != 0 {
		t.Fatalf("the upstream ran echo %d times without an audit record", n)
	}
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_chart", Arguments: map[string]any{"text": "x"}}); err == nil || r.up.count("delete_chart") != 0 {
		t.Fatalf("denied call: %v, upstream ran it %d times", err, r.up.count("delete_chart"))
	}
	r.mu.Lock()
	r.auditErr = nil
	r.mu.Unlock()
	if res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
		t.Fatalf("after the audit log recovered: %v %+v", err, res)
	}
}

// An allowed call is recorded before it reaches the upstream, and its
// answer is held until the record is durable: the fsync overlaps the
// upstream's work, and no caller sees an answer whose record could be lost.
func TestAnswerWaitsUntilTheAuditRecordIsDurable(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	cs := r.mustConnect(t, "127.0.0.2", "")
	release := make(chan struct{})
	r.mu.Lock()
	r.durable = func() error { <-release; return nil }
	r.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for r.up.count("echo") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the call never reached the upstream while its record was being made durable")
		}
		time.Sleep(5 * time.Millisecond)
	}
	recorded := false
	for _, e := range r.auditEvents() {
		recorded = recorded || e.Tool == "echo" && e.Decision == "allow"
	}
	if !recorded {
		t.Fatal("the upstream ran echo before the call was recorded")
	}
	select {
	case err := <-done:
		t.Fatalf("the answer went out before its record was durable (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("call: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the answer never came once the record was durable")
	}
}

// The allowed messages of a batch are recorded in one piece, so a failure
// part way cannot leave records of calls that were never forwarded: the
// audit hook (the node's auditlog.Append, which is all or none) gets them
// together, after the denials, and when it fails nothing is forwarded.
func TestBatchRecordedInOnePiece(t *testing.T) {
	r := newRig(t, &sdk.StreamableHTTPOptions{JSONResponse: true})
	sid := r.rawSession(t, "127.0.0.2", "2025-03-26")
	h := map[string]string{"Mcp-Session-Id": sid}
	batch := `[
		{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}}},
		{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_chart","arguments":{"text":"boom"}}},
		{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"again"}}}
	]`
	r.mu.Lock()
	r.batches = nil
	r.mu.Unlock()
	if a := r.post(t, "127.0.0.2", batch, h); a.status != 200 || a.byID(1) == nil || a.byID(3) == nil {
		t.Fatalf("batch: %d %s", a.status, a.body)
	}
	r.mu.Lock()
	got := r.batches
	r.mu.Unlock()
	if len(got) != 2 || len(got[0]) != 1 || got[0][0].Decision != "deny" || len(got[1]) != 2 ||
		got[1][0].Tool != "echo" || got[1][1].Tool != "echo" || got[1][0].Decision != "allow" || got[1][1].Decision != "allow" {
		t.Fatalf("audit hook calls: %+v", got)
	}

	r.mu.Lock()
	r.auditErr = errors.New("disk full")
	r.mu.Unlock()
	ran := r.up.count("echo")
	a := r.post(t, "127.0.0.2", batch, h)
	if a.status != 503 || len(a.msgs) != 1 || !strings.Contains(errMsg(a.msgs[0]), "cannot record an audit event") {
		t.Fatalf("batch without an audit record: %d %s", a.status, a.body)
	}
	if n := r.up.count("echo") - ran; n != 0 {
		t.Fatalf("the upstream ran %d calls of a batch that could not be recorded", n)
	}
}
