// Package bridge carries MCP from a local client to a mesh service: a stdio
// endpoint that an MCP client launches from its config (Claude Desktop,
// Cursor, VS Code), and a loopback HTTP endpoint for clients that only
// speak HTTP. Both end at a Streamable HTTP URL (the node's LocalAPI, which
// carries the request over the mesh); the bridge knows nothing of
// WireGuard or policy.
package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
)

// MaxMessageBytes bounds one JSON-RPC message read from stdin or the service.
const MaxMessageBytes = 4 << 20

// Stdio bridges newline-delimited JSON-RPC on In/Out to a Streamable HTTP
// MCP endpoint, as a Streamable HTTP client would: POST per message, JSON or
// SSE answers, the session id and protocol version learnt at initialize,
// and the standalone SSE stream for messages the server starts.
type Stdio struct {
	Endpoint   string
	HTTPClient *http.Client
	In         io.Reader
	Out        io.Writer
	Logger     *slog.Logger

	outMu sync.Mutex // one whole line at a time on Out

	mu struct {
		sync.Mutex
		session   string
		version   string
		initID    string // id of the initialize request in flight
		streaming bool   // the standalone GET stream is open
	}
	posts  sync.WaitGroup // one per message in flight
	stream sync.WaitGroup // the standalone GET stream
}

// envelope is the part of a JSON-RPC message the bridge looks at.
type envelope struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Run bridges until In ends or ctx is cancelled.
func (b *Stdio) Run(ctx context.Context) error {
	if b.Logger == nil {
		b.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		b.posts.Wait()
		b.stream.Wait()
	}()
	sc := bufio.NewScanner(b.In)
	sc.Buffer(make([]byte, 64<<10), MaxMessageBytes)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		msg := append([]byte(nil), line...)
		var env envelope
		if err := json.Unmarshal(msg, &env); err != nil {
			b.writeError(nil, -32700, "parse error: "+err.Error())
			continue
		}
		if env.Method == "initialize" {
			b.mu.Lock()
			b.mu.initID = string(env.ID)
			b.mu.Unlock()
		}
		b.posts.Add(1)
		go func() {
			defer b.posts.Done()
			b.post(ctx, msg, env)
		}()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("bridge: read stdin: %w", err)
	}
	// stdin closed: the client is gone. Let answers in flight arrive, stop
	// the standalone stream, and end the session politely.
	b.posts.Wait()
	cancel()
	b.stream.Wait()
	b.endSession()
	return nil
}

func (b *Stdio) headers(h http.Header) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.session != "" {
		h.Set("Mcp-Session-Id", b.mu.session)
	}
	if b.mu.version != "" {
		h.Set("Mcp-Protocol-Version", b.mu.version)
	}
}

func (b *Stdio) post(ctx context.Context, msg []byte, env envelope) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.Endpoint, bytes.NewReader(msg))
	if err != nil {
		b.writeError(env.ID, -32603, err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	b.headers(req.Header)
	resp, err := b.HTTPClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			b.writeError(env.ID, -32603, "cannot reach the service: "+unwrap(err))
		}
		return
	}
	defer resp.Body.Close()
	if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
		b.mu.Lock()
		b.mu.session = s
		b.mu.Unlock()
	}
	if resp.StatusCode/100 != 2 {
		b.relayFailure(resp, env)
		return
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusNoContent:
	case ct == "text/event-stream":
		b.readSSE(resp.Body)
	default:
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxMessageBytes+1))
		if err != nil || len(body) > MaxMessageBytes {
			b.writeError(env.ID, -32603, "answer too large or cut off")
			return
		}
		if len(bytes.TrimSpace(body)) > 0 {
			b.deliver(body)
		}
	}
	if env.Method == "notifications/initialized" {
		b.openStream(ctx)
	}
}

// relayFailure turns an HTTP failure into a JSON-RPC error the client can
// show, keeping the service's own JSON-RPC error when it sent one.
func (b *Stdio) relayFailure(resp *http.Response, env envelope) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var rpc struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	code := -32603
	if json.Unmarshal(body, &rpc) == nil && rpc.Error != nil {
		msg, code = rpc.Error.Message, rpc.Error.Code
	}
	if msg == "" {
		msg = resp.Status
	}
	if len(env.ID) == 0 {
		b.Logger.Warn("notification refused", "method", env.Method, "status", resp.StatusCode, "msg", msg)
		return
	}
	b.writeError(env.ID, code, msg)
}

// deliver writes a message (or a batch, split) to Out and learns the
// protocol version from the initialize result.
func (b *Stdio) deliver(data []byte) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var batch []json.RawMessage
		if json.Unmarshal(data, &batch) == nil {
			for _, m := range batch {
				b.deliver(m)
			}
			return
		}
	}
	var env envelope
	if json.Unmarshal(data, &env) == nil && len(env.ID) > 0 && len(env.Result) > 0 {
		b.mu.Lock()
		if string(env.ID) == b.mu.initID {
			var r struct {
				ProtocolVersion string `json:"protocolVersion"`
			}
			if json.Unmarshal(env.Result, &r) == nil {
				b.mu.version = r.ProtocolVersion
			}
		}
		b.mu.Unlock()
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		b.Logger.Warn("service sent malformed JSON; dropped", "err", err)
		return
	}
	compact.WriteByte('\n')
	b.outMu.Lock()
	defer b.outMu.Unlock()
	if _, err := b.Out.Write(compact.Bytes()); err != nil {
		b.Logger.Warn("write to client", "err", err)
	}
}

func (b *Stdio) writeError(id json.RawMessage, code int, msg string) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	e, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": msg}})
	b.deliver(e)
}

// readSSE delivers the data of every event of an SSE stream.
func (b *Stdio) readSSE(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxMessageBytes)
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				b.deliver(data.Bytes())
				data.Reset()
			}
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if data.Len() > 0 {
		b.deliver(data.Bytes())
	}
}

// openStream opens the standalone GET stream once, for requests and
// notifications the server starts; a server without one answers 405.
func (b *Stdio) openStream(ctx context.Context) {
	b.mu.Lock()
	if b.mu.streaming {
		b.mu.Unlock()
		return
	}
	b.mu.streaming = true
	b.mu.Unlock()
	b.stream.Add(1)
	go func() {
		defer b.stream.Done()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.Endpoint, nil)
		if err != nil {
			return
		}
		req.Header.Set("Accept", "text/event-stream")
		b.headers(req.Header)
		resp, err := b.HTTPClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			b.readSSE(resp.Body)
		}
	}()
}

func (b *Stdio) endSession() {
	b.mu.Lock()
	session := b.mu.session
	b.mu.Unlock()
	if session == "" {
		return
	}
	req, err := http.NewRequest(http.MethodDelete, b.Endpoint, nil)
	if err != nil {
		return
	}
	b.headers(req.Header)
	if resp, err := b.HTTPClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

func unwrap(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}
