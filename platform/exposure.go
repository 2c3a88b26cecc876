package platform

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// The exposure audit looks for shadow MCP servers: listening sockets that
// can be reached from off the host, bypassing the mesh, and that answer an
// MCP initialize. It only finds and describes them; what counts as allowed
// (a service the node serves, a port its firewall locks down) is the
// caller's decision.

// Transport names an MCPAnswer can carry.
const (
	// TransportStreamableHTTP is the Streamable HTTP transport (MCP
	// 2025-03-26 and later): the server answered a POSTed initialize.
	TransportStreamableHTTP = "streamable-http"
	// TransportSSE is the HTTP+SSE transport of MCP 2024-11-05: a GET
	// opened an event stream whose first event named the POST endpoint.
	TransportSSE = "sse"
)

// Defaults of ScanOptions, exported so that callers can show what a scan
// did without repeating the numbers.
const (
	// DefaultProbeTimeout bounds one listener's probe: long enough for a
	// busy local server, short enough that a silent socket costs little.
	DefaultProbeTimeout = 1500 * time.Millisecond
	// DefaultScanConcurrency is how many listeners are probed at once; a
	// host has few listeners and each probe mostly waits.
	DefaultScanConcurrency = 8
)

// DefaultProbePaths returns the paths ProbeMCP and ScanExposure try when
// given none: where the SDKs mount Streamable HTTP (/mcp), a server at the
// root (/), and where they mount the old SSE transport (/sse). It returns a
// new slice each time, so callers may change it.
func DefaultProbePaths() []string { return []string{"/mcp", "/", "/sse"} }

const (
	// probeMaxBody bounds what is read of any response body or event
	// stream, so a hostile or chatty server cannot make the audit buffer
	// without limit.
	probeMaxBody = 64 << 10
	// probeMaxString bounds the server name, version and protocol version
	// kept from an answer; they end up in reports.
	probeMaxString = 256
	// probeDeleteTimeout bounds closing a session the probe opened, which
	// runs even when the probe's own context has ended so that servers are
	// not left holding sessions.
	probeDeleteTimeout = 500 * time.Millisecond
	// probeProtocolVersion is the MCP version the probe offers; servers of
	// every later version still accept it.
	probeProtocolVersion = "2025-06-18"
)

// probeInitialize is the body of the probe's initialize request.
const probeInitialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{` +
	`"protocolVersion":"` + probeProtocolVersion + `","capabilities":{},` +
	`"clientInfo":{"name":"mcpmesh-exposure-audit","version":"1"}}}`

// Listener is one listening TCP socket of this host's network namespace.
type Listener struct {
	// Addr is the bound address as the kernel reports it: 0.0.0.0 or ::
	// for every interface; an IPv6 socket bound to an IPv4 address shows
	// it IPv4-mapped (::ffff:a.b.c.d).
	Addr netip.AddrPort
	// Inode identifies the socket, and ties it to the processes holding it.
	Inode uint64
	// PID is the owning process when /proc lets us see it, else 0. When
	// several processes share the socket (a forking server), it is the
	// lowest of their PIDs, usually the parent.
	PID int
	// Process is the owner's command name (/proc/PID/comm), else "".
	Process string
	// UID is the user that owns the socket, as the kernel's socket table
	// says.
	UID int
}

// MCPAnswer is what a socket said when asked to initialize an MCP session.
type MCPAnswer struct {
	// Transport is TransportStreamableHTTP or TransportSSE.
	Transport string
	// URL is the URL that answered, e.g. http://127.0.0.1:9000/mcp.
	URL string
	// ServerName and ServerVersion are the server's serverInfo; both may be
	// empty for the SSE transport when the server did not answer the
	// initialize sent to its endpoint in time.
	ServerName    string
	ServerVersion string
	// ProtocolVersion is the MCP version the server chose.
	ProtocolVersion string
}

// Exposure is one listening socket that can be reached off the host and
// answered as an MCP server.
type Exposure struct {
	Listener Listener
	MCP      MCPAnswer
}

// ScanOptions tunes ScanExposure. The zero value scans this host with the
// defaults.
type ScanOptions struct {
	// Paths are tried on every listener, in order; nil means
	// DefaultProbePaths.
	Paths []string
	// Timeout bounds the probe of one listener; 0 means DefaultProbeTimeout.
	Timeout time.Duration
	// Concurrency is how many listeners are probed at once; 0 means
	// DefaultScanConcurrency.
	Concurrency int
	// Logger receives a debug record for each probe that could not be
	// completed (refused, timed out); nil means no logging.
	Logger *slog.Logger
	// Listeners lists the sockets to consider; nil means ListListeners.
	// Tests inject a fixed list through it.
	Listeners func() ([]Listener, error)
}

// ScanExposure lists the listeners, keeps those bound to a non-loopback
// address, probes each and returns the ones that answer MCP, sorted by
// port. A socket bound to 0.0.0.0 is probed at 127.0.0.1, one bound to ::
// at [::1] and, if that cannot be reached, at 127.0.0.1; one bound to a
// specific address at that address. No traffic leaves the host. A probe
// that fails (refused, timed out) only means the socket is not reported;
// the scan fails only when the listeners cannot be listed or ctx ends.
func ScanExposure(ctx context.Context, opts ScanOptions) ([]Exposure, error) {
	if opts.Paths == nil {
		opts.Paths = DefaultProbePaths()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultProbeTimeout
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultScanConcurrency
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Listeners == nil {
		opts.Listeners = ListListeners
	}
	if _, err := parseProbePaths(opts.Paths); err != nil {
		return nil, fmt.Errorf("platform: scan exposure: %w", err)
	}
	ls, err := opts.Listeners()
	if err != nil {
		return nil, fmt.Errorf("platform: scan exposure: %w", err)
	}

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		found []Exposure
		sem   = make(chan struct{}, opts.Concurrency)
	)
loop:
	for _, l := range ls {
		targets := probeTargets(l.Addr)
		if len(targets) == 0 {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Go(func() {
			defer func() { <-sem }()
			ans := probeListener(ctx, l, targets, opts)
			if ans != nil {
				mu.Lock()
				found = append(found, Exposure{Listener: l, MCP: *ans})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("platform: scan exposure: %w", err)
	}
	slices.SortFunc(found, func(a, b Exposure) int {
		return cmp.Or(
			cmp.Compare(a.Listener.Addr.Port(), b.Listener.Addr.Port()),
			a.Listener.Addr.Addr().Compare(b.Listener.Addr.Addr()),
			cmp.Compare(a.Listener.Inode, b.Listener.Inode),
		)
	})
	return found, nil
}

// probeTargets is where a listener bound to bound is asked, in order of
// preference; none when it is bound to loopback and so not exposed.
func probeTargets(bound netip.AddrPort) []netip.AddrPort {
	a, port := bound.Addr().Unmap(), bound.Port()
	switch {
	case !a.IsValid() || a.IsLoopback():
		return nil
	case a == netip.IPv4Unspecified():
		return []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)}
	case a == netip.IPv6Unspecified():
		return []netip.AddrPort{
			netip.AddrPortFrom(netip.IPv6Loopback(), port),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port),
		}
	default:
		return []netip.AddrPort{netip.AddrPortFrom(a, port)}
	}
}

// probeListener probes l at each target in turn, moving on only when a
// target cannot be connected to, all within one opts.Timeout.
func probeListener(ctx context.Context, l Listener, targets []netip.AddrPort, opts ScanOptions) *MCPAnswer {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	for i, t := range targets {
		ans, err := ProbeMCP(ctx, t, opts.Paths)
		if err == nil {
			return ans
		}
		opts.Logger.Debug("exposure probe incomplete", "listener", l.Addr, "target", t,
			"pid", l.PID, "process", l.Process, "err", err)
		var ce *probeConnectError
		if !errors.As(err, &ce) || i == len(targets)-1 {
			return nil
		}
	}
	return nil
}

// ProbeMCP asks the HTTP server at addr whether it speaks MCP, trying each
// path (nil means DefaultProbePaths) first with a Streamable HTTP
// initialize, then with an SSE GET; nil, nil when it does not. It returns an
// error when the answer is unknown: addr is not an address of this host
// (the probe never sends traffic elsewhere), it cannot be connected to, or
// ctx ended before the server said anything conclusive.
func ProbeMCP(ctx context.Context, addr netip.AddrPort, paths []string) (*MCPAnswer, error) {
	target, err := probeHostTarget(addr)
	if err != nil {
		return nil, err
	}
	if paths == nil {
		paths = DefaultProbePaths()
	}
	refs, err := parseProbePaths(paths)
	if err != nil {
		return nil, fmt.Errorf("platform: probe %s: %w", addr, err)
	}
	base := &url.URL{Scheme: "http", Host: target.String()}
	p := newProber(target)
	for _, ref := range refs {
		u := base.ResolveReference(ref)
		for _, try := range []func(context.Context, *url.URL) (*MCPAnswer, error){p.streamable, p.sse} {
			ans, err := try(ctx, u)
			if err != nil || ans != nil {
				return ans, err
			}
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("platform: probe %s: no answer: %w", addr, err)
			}
		}
	}
	return nil, nil
}

// probeHostTarget checks that addr is an address of this host (loopback or
// on one of its interfaces) and gives it the zone a link-local address
// needs to be dialled.
func probeHostTarget(addr netip.AddrPort) (netip.AddrPort, error) {
	a := addr.Addr().Unmap()
	if !a.IsValid() || addr.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("platform: probe %s: not an address and port", addr)
	}
	if a.IsLoopback() {
		return netip.AddrPortFrom(a, addr.Port()), nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("platform: probe %s: list interfaces: %w", addr, err)
	}
	for _, ifc := range ifaces {
		if a.Zone() != "" && a.Zone() != ifc.Name {
			continue
		}
		ias, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ia := range ias {
			ipn, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			own, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || own.Unmap() != a.WithZone("") {
				continue
			}
			if a.IsLinkLocalUnicast() {
				a = a.WithZone(ifc.Name)
			}
			return netip.AddrPortFrom(a, addr.Port()), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("platform: probe %s: not an address of this host", addr)
}

// parseProbePaths checks that each path is an absolute path (it may carry
// a query) and not a URL of another server.
func parseProbePaths(paths []string) ([]*url.URL, error) {
	refs := make([]*url.URL, 0, len(paths))
	for _, p := range paths {
		ref, err := url.Parse(p)
		if err != nil || ref.Scheme != "" || ref.Host != "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
			return nil, fmt.Errorf("probe path %q is not an absolute path", p)
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// prober sends the probe's requests. Its client can only ever connect to
// target, whatever URL it is given, and follows no redirects.
type prober struct {
	target netip.AddrPort
	client *http.Client
}

// probeConnectError is a failure to open a connection to the target, the
// one failure after which ScanExposure tries the next address.
type probeConnectError struct{ err error }

func (e *probeConnectError) Error() string { return "connect: " + e.err.Error() }
func (e *probeConnectError) Unwrap() error { return e.err }

func newProber(target netip.AddrPort) *prober {
	var d net.Dialer
	tr := &http.Transport{
		Proxy: nil, // the probe talks to this host only, never through a proxy
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", target.String())
			if err != nil {
				return nil, &probeConnectError{err}
			}
			return newWriteFirstConn(c), nil
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: probeMaxBody,
	}
	return &prober{
		target: target,
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// writeFirstConn holds reads back until something has been written. A
// server that speaks first (SSH, SMTP, a database) then shows up as a bad
// answer to the probe's request, rather than as the "unsolicited response"
// line net/http would otherwise log for every such server on every scan.
type writeFirstConn struct {
	net.Conn
	writeOnce, closeOnce sync.Once
	written, closed      chan struct{}
}

func newWriteFirstConn(c net.Conn) *writeFirstConn {
	return &writeFirstConn{Conn: c, written: make(chan struct{}), closed: make(chan struct{})}
}

func (c *writeFirstConn) Write(b []byte) (int, error) {
	c.writeOnce.Do(func() { close(c.written) })
	return c.Conn.Write(b)
}

func (c *writeFirstConn) Read(b []byte) (int, error) {
	select {
	case <-c.written:
		return c.Conn.Read(b)
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *writeFirstConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// do sends req. A failure to connect is an error; any other failure (a
// reset, a reply that is not HTTP) is a nil response: the server did not
// answer as MCP.
func (p *prober) do(req *http.Request) (*http.Response, error) {
	resp, err := p.client.Do(req)
	if err == nil {
		return resp, nil
	}
	var ce *probeConnectError
	if errors.As(err, &ce) {
		return nil, fmt.Errorf("platform: probe %s: %w", p.target, ce)
	}
	return nil, nil
}

// post sends the initialize request to u.
func (p *prober) post(ctx context.Context, u *url.URL) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(probeInitialize))
	if err != nil {
		return nil, fmt.Errorf("platform: probe %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	return p.do(req)
}

// streamable POSTs initialize to u and reads the answer, closing the
// session the server may have opened.
func (p *prober) streamable(ctx context.Context, u *url.URL) (*MCPAnswer, error) {
	resp, err := p.post(ctx, u)
	if resp == nil {
		return nil, err
	}
	var v probeVerdict
	ok := resp.StatusCode/100 == 2
	if ok {
		v, ok = readAnswer(resp.Header.Get("Content-Type"), resp.Body)
	}
	resp.Body.Close()
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
		p.deleteSession(ctx, u, sid, v.answer.ProtocolVersion)
	}
	if !ok || v.answer.Transport != TransportStreamableHTTP {
		return nil, nil
	}
	ans := v.answer
	ans.URL = u.String()
	return &ans, nil
}

// deleteSession asks the server to end session sid, ignoring the outcome.
func (p *prober) deleteSession(ctx context.Context, u *url.URL, sid, version string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeDeleteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.String(), nil)
	if err != nil {
		return
	}
	req.Header.Set("Mcp-Session-Id", sid)
	if version != "" {
		req.Header.Set("MCP-Protocol-Version", version)
	}
	if resp, _ := p.do(req); resp != nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, probeMaxBody))
		resp.Body.Close()
	}
}

// sse opens an event stream at u and takes it for the old SSE transport
// when the first event names an endpoint. It then POSTs initialize to that
// endpoint, if it is on the same server, and reads the server's name from
// the stream while ctx lasts. The stream is closed on return.
func (p *prober) sse(ctx context.Context, u *url.URL) (*MCPAnswer, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("platform: probe %s: %w", u, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := p.do(req)
	if resp == nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 || probeMediaType(resp.Header.Get("Content-Type")) != "text/event-stream" {
		return nil, nil
	}
	events := newSSEScanner(resp.Body)
	ev, ok := events.next()
	if !ok {
		return nil, nil
	}
	v, ok := classifyEvent(ev, true)
	if !ok || v.answer.Transport != TransportSSE {
		return nil, nil
	}
	ans := &MCPAnswer{Transport: TransportSSE, URL: u.String()}

	ep, err := u.Parse(v.endpoint)
	if err != nil || ep.Scheme != u.Scheme || ep.Host != u.Host {
		return ans, nil
	}
	post, _ := p.post(ctx, ep) // a failure leaves the answer without a name
	if post == nil {
		return ans, nil
	}
	io.Copy(io.Discard, io.LimitReader(post.Body, probeMaxBody))
	post.Body.Close()
	if post.StatusCode/100 != 2 {
		return ans, nil
	}
	for {
		ev, ok := events.next()
		if !ok {
			return ans, nil
		}
		if v, ok := classifyEvent(ev, false); ok && v.answer.Transport == TransportStreamableHTTP {
			ans.ServerName = v.answer.ServerName
			ans.ServerVersion = v.answer.ServerVersion
			ans.ProtocolVersion = v.answer.ProtocolVersion
			return ans, nil
		}
	}
}

// probeVerdict is what the classifier found in a response: an answer
// without its URL, and for the SSE transport the endpoint the server named.
type probeVerdict struct {
	answer   MCPAnswer
	endpoint string
}

// classifyAnswer decides whether body, a response with the given
// Content-Type to the probe's initialize, is an MCP server's answer: a
// JSON-RPC response with id 1 whose result has a protocolVersion string and
// a serverInfo object (as JSON, or in an event stream), or an event stream
// whose first event is the SSE transport's endpoint event. Only the first
// 64 KiB count. It is pure, so it can be fuzzed.
func classifyAnswer(contentType string, body []byte) (probeVerdict, bool) {
	return readAnswer(contentType, bytes.NewReader(body))
}

// readAnswer is classifyAnswer on a body still being received: it stops
// reading an event stream at the first conclusive event.
func readAnswer(contentType string, body io.Reader) (probeVerdict, bool) {
	if probeMediaType(contentType) == "text/event-stream" {
		events := newSSEScanner(body)
		for first := true; ; first = false {
			ev, ok := events.next()
			if !ok {
				return probeVerdict{}, false
			}
			if v, ok := classifyEvent(ev, first); ok {
				return v, true
			}
		}
	}
	data, err := io.ReadAll(io.LimitReader(body, probeMaxBody))
	if err != nil {
		return probeVerdict{}, false
	}
	return classifyJSON(data)
}

// classifyEvent reads one event of a stream: an endpoint event, if it is
// the first, marks the SSE transport; a message event may carry the
// initialize result.
func classifyEvent(ev sseEvent, first bool) (probeVerdict, bool) {
	switch ev.name {
	case "endpoint":
		ep := strings.TrimSpace(ev.data)
		if !first || ep == "" {
			return probeVerdict{}, false
		}
		return probeVerdict{answer: MCPAnswer{Transport: TransportSSE}, endpoint: ep}, true
	case "", "message":
		return classifyJSON([]byte(ev.data))
	}
	return probeVerdict{}, false
}

// classifyJSON finds the initialize result in a JSON-RPC message or batch.
func classifyJSON(data []byte) (probeVerdict, bool) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var batch []json.RawMessage
		if json.Unmarshal(data, &batch) != nil {
			return probeVerdict{}, false
		}
		for _, m := range batch {
			if v, ok := classifyMessage(m); ok {
				return v, true
			}
		}
		return probeVerdict{}, false
	}
	return classifyMessage(data)
}

// classifyMessage reads one JSON-RPC message as the initialize result.
func classifyMessage(data []byte) (probeVerdict, bool) {
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Result struct {
			ProtocolVersion json.RawMessage `json:"protocolVersion"`
			ServerInfo      json.RawMessage `json:"serverInfo"`
		} `json:"result"`
	}
	if json.Unmarshal(data, &msg) != nil || string(bytes.TrimSpace(msg.ID)) != "1" {
		return probeVerdict{}, false
	}
	var version string
	if !jsonIs(msg.Result.ProtocolVersion, '"') || json.Unmarshal(msg.Result.ProtocolVersion, &version) != nil {
		return probeVerdict{}, false
	}
	var info map[string]json.RawMessage
	if !jsonIs(msg.Result.ServerInfo, '{') || json.Unmarshal(msg.Result.ServerInfo, &info) != nil {
		return probeVerdict{}, false
	}
	version = cleanAnswerString(version)
	if version == "" {
		return probeVerdict{}, false
	}
	str := func(raw json.RawMessage) string {
		var s string
		if !jsonIs(raw, '"') || json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return cleanAnswerString(s)
	}
	return probeVerdict{answer: MCPAnswer{
		Transport:       TransportStreamableHTTP,
		ServerName:      str(info["name"]),
		ServerVersion:   str(info["version"]),
		ProtocolVersion: version,
	}}, true
}

// jsonIs reports whether the JSON value raw starts with the byte c, which
// tells its type: '"' a string, '{' an object.
func jsonIs(raw json.RawMessage, c byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == c
}

// cleanAnswerString makes a string from a server fit for a report: valid
// UTF-8, no control characters, at most probeMaxString bytes.
func cleanAnswerString(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= probeMaxString {
		return s
	}
	cut := probeMaxString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// probeMediaType is the media type of a Content-Type, lower case, or "".
func probeMediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	name string
	data string
}

// sseScanner splits an event stream into events, following the
// server-sent events format (fields, comments, events ended by a blank
// line), reading at most probeMaxBody bytes in all.
type sseScanner struct {
	r     *bufio.Reader
	begun bool
}

func newSSEScanner(r io.Reader) *sseScanner {
	return &sseScanner{r: bufio.NewReader(io.LimitReader(r, probeMaxBody))}
}

// next returns the next event, or false at the end of the stream or the
// read limit. An event cut off by the end is still returned.
func (s *sseScanner) next() (sseEvent, bool) {
	var (
		ev      sseEvent
		data    strings.Builder
		hasData bool
	)
	dispatch := func() sseEvent {
		ev.data = strings.TrimSuffix(data.String(), "\n")
		return ev
	}
	for {
		line, err := s.r.ReadString('\n')
		if !s.begun {
			s.begun = true
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		if err != nil && line == "" {
			return dispatch(), hasData
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch {
		case line == "":
			if hasData {
				return dispatch(), true
			}
			ev = sseEvent{}
		case line[0] == ':':
			// a comment
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.name = value
			case "data":
				data.WriteString(value)
				data.WriteByte('\n')
				hasData = true
			}
		}
		if err != nil {
			return dispatch(), hasData
		}
	}
}
