package mcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// HTTP headers of the Streamable HTTP transport.
const (
	hdrSession     = "Mcp-Session-Id"
	hdrVersion     = "Mcp-Protocol-Version"
	hdrMethod      = "Mcp-Method"
	hdrName        = "Mcp-Name"
	hdrParamPrefix = "Mcp-Param-"
	hdrLastEvent   = "Last-Event-ID"
)

// Protocol versions where the rules change.
const (
	versionNoBatch   = "2025-06-18" // batches are gone from here on
	versionStateless = "2026-07-28" // Mcp-Method/Mcp-Name headers from here on
)

// maxUpstreamBody bounds a JSON answer the proxy reads to filter.
const maxUpstreamBody = 64 << 20

// requestReadTimeout bounds reading a whole request, body included.
const requestReadTimeout = 30 * time.Second

// exchange is one HTTP request through the proxy.
type exchange struct {
	p     *Proxy
	w     http.ResponseWriter
	r     *http.Request
	start time.Time
	d     decider
	sid   string   // Mcp-Session-Id of the request, if any
	sess  *session // its session, owned by the caller
	// reserved is set while the exchange holds one of the caller's
	// session slots for an initialize; a session the upstream opens takes
	// it over, and otherwise it is given back when the exchange ends.
	reserved bool
}

func (p *Proxy) serveMCP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{p: p, w: w, r: r, start: time.Now()}
	name := r.PathValue("name")
	svc := p.service(name)
	if svc == nil {
		writeRPCError(w, http.StatusNotFound, nil, codeNotFound, fmt.Sprintf("mcp: no service %q on this node", name))
		return
	}
	x.d.svc = svc
	x.d.key = p.cfg.DigestKey
	for _, h := range []string{hdrSession, hdrVersion, hdrLastEvent} {
		// One value each: the proxy checks one, and an upstream that
		// read another would act on what was not checked.
		if len(r.Header.Values(h)) > 1 {
			writeRPCError(w, http.StatusBadRequest, nil, codeInvalidRequest, "mcp: more than one "+h+" header")
			return
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || p.cfg.WhoIs == nil {
		x.refuse(http.StatusForbidden, "mcp: caller address unknown", r.Method)
		return
	}
	caller, err := p.cfg.WhoIs(ap.Addr().Unmap())
	if err != nil {
		x.refuse(http.StatusForbidden, fmt.Sprintf("mcp: caller %s refused: %v", ap.Addr(), err), r.Method)
		return
	}
	x.d.caller = caller
	x.d.id = caller.identity()
	// MCP clients are not browsers. A request with an Origin, or addressed
	// to a name rather than the node's address, is a web page's: one that
	// rebound its own name to this address (DNS rebinding) would otherwise
	// call with the grants of whatever node its browser runs on.
	if r.Header.Get("Origin") != "" {
		x.refuse(http.StatusForbidden, "mcp: requests from web pages (with an Origin header) are refused", r.Method)
		return
	}
	if !addressedByIP(r.Host) {
		x.refuse(http.StatusMisdirectedRequest, fmt.Sprintf("mcp: Host %q is not an address; the proxy answers only requests to its own address", r.Host), r.Method)
		return
	}
	if p.cfg.Policy != nil {
		x.d.pol, x.d.ver = p.cfg.Policy()
	}
	x.d.reach = x.d.pol != nil && x.d.pol.CanReach(x.d.id, svc.dst)

	if x.sid = r.Header.Get(hdrSession); x.sid != "" {
		svc.mu.Lock()
		s := svc.sessions[x.sid]
		mine := s != nil && s.owner == caller.ID
		if mine {
			// In use until the exchange ends (a stream may last hours),
			// so no sweep takes it meanwhile.
			s.active.Add(1)
		}
		svc.mu.Unlock()
		if !mine {
			// The same answer whether the session does not exist or
			// belongs to someone else: no oracle for session ids.
			x.refuse(http.StatusNotFound, "mcp: session not found", r.Method)
			return
		}
		s.touch()
		defer func() { s.touch(); s.active.Add(-1) }()
		x.sess = s
	}

	switch r.Method {
	case http.MethodPost:
		x.post()
	case http.MethodGet, http.MethodDelete:
		x.stream()
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeRPCError(w, http.StatusMethodNotAllowed, nil, codeInvalidRequest, "mcp: method "+r.Method+" not allowed")
	}
}

// addressedByIP reports whether a Host header names an IP address (with or
// without a port), as every client that reaches the proxy by its mesh
// address sends.
func addressedByIP(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	_, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil
}

// refuse answers an HTTP request that is denied as a whole and audits it.
func (x *exchange) refuse(status int, msg, method string) {
	x.p.auditNow(&x.d, x.start, method, verdict{code: CodeDenied, reason: msg}, x.sid)
	writeRPCError(x.w, status, nil, CodeDenied, msg)
}

// stream forwards GET (the standalone SSE stream, or a resumed stream with
// Last-Event-ID) and DELETE (end of session) for the session's owner.
func (x *exchange) stream() {
	if !x.d.reach {
		x.refuse(http.StatusForbidden, "mcp: "+x.d.unreachable(), x.r.Method)
		return
	}
	if x.sess == nil {
		x.refuse(http.StatusBadRequest, "mcp: "+x.r.Method+" needs an "+hdrSession+" header", x.r.Method)
		return
	}
	durable, err := x.p.record(x.p.event(&x.d, x.start, x.r.Method, verdict{allow: true, reason: "session owner"}, x.sid))
	if err != nil {
		x.auditFailed(nil, err)
		return
	}
	req := x.upstreamRequest(x.r.Method, nil)
	copyHeaders(req.Header, x.r.Header, "Accept", hdrSession, hdrVersion, hdrLastEvent)
	resp, err := x.p.rt.RoundTrip(req)
	x.waitDurable(durable)
	if err != nil {
		writeRPCError(x.w, http.StatusBadGateway, nil, codeInternal, fmt.Sprintf("mcp: upstream of %q: %v", x.d.svc.Name, err))
		return
	}
	defer resp.Body.Close()
	if x.r.Method == http.MethodDelete && resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotFound {
		x.dropSession()
	}
	x.relay(resp, nil, nil)
}

func (x *exchange) dropSession() {
	svc := x.d.svc
	svc.mu.Lock()
	if svc.sessions[x.sid] == x.sess {
		svc.removeLocked(x.sid)
	}
	svc.mu.Unlock()
}

// reserveSession takes one of the caller's session slots for an
// initialize, first ending the sessions that have idled out. It reports
// false, having answered the request, when the caller has none left.
func (x *exchange) reserveSession(callID any) bool {
	svc := x.d.svc
	svc.mu.Lock()
	idle := svc.sweepLocked()
	ok := svc.reserveLocked(x.d.caller.ID)
	svc.mu.Unlock()
	x.p.endSessions(svc, idle)
	if !ok {
		msg := fmt.Sprintf("mcp: %s already holds %d sessions with svc:%s, the most one caller may; end one (DELETE), or let one go unused for %s", x.d.caller.ID, svc.quota(), svc.Name, sessionIdle)
		x.p.auditNow(&x.d, x.start, "initialize", verdict{code: CodeDenied, reason: msg}, x.sid)
		status := http.StatusTooManyRequests
		if callID != nil {
			status = http.StatusOK // an answer to the call, which the client shows
		}
		writeRPCError(x.w, status, callID, CodeDenied, msg)
		return false
	}
	x.reserved = true
	return true
}

// releaseSession gives back a slot that no session took over.
func (x *exchange) releaseSession() {
	if !x.reserved {
		return
	}
	svc := x.d.svc
	svc.mu.Lock()
	svc.releaseLocked(x.d.caller.ID)
	svc.mu.Unlock()
	x.reserved = false
}

// post decides the message(s) of a POST and forwards what is allowed.
func (x *exchange) post() {
	if ct := baseMediaType(x.r.Header.Get("Content-Type")); ct != "application/json" {
		x.refuse(http.StatusUnsupportedMediaType, "mcp: Content-Type must be application/json", "POST")
		return
	}
	// The server's ReadTimeout bounds reading the body (see Serve).
	max := x.p.cfg.MaxMessageBytes
	body, err := readAllSized(x.r.Body, x.r.ContentLength, max)
	if err != nil {
		x.badMessage(http.StatusBadRequest, codeParse, "mcp: reading request body: "+err.Error())
		return
	}
	if int64(len(body)) > max {
		x.badMessage(http.StatusRequestEntityTooLarge, codeInvalidRequest, fmt.Sprintf("mcp: message larger than %d bytes (not forwarded)", max))
		return
	}
	msgs, batch, err := parseBody(body)
	if err != nil {
		code := codeInvalidRequest
		if errors.Is(err, errParse) {
			code = codeParse
		}
		x.badMessage(http.StatusBadRequest, code, err.Error()+" (not forwarded)")
		return
	}

	version := x.r.Header.Get(hdrVersion)
	if x.sess != nil {
		version = x.sess.protocol(version)
	}
	if batch && version != "" && version >= versionNoBatch {
		x.badMessage(http.StatusBadRequest, codeInvalidRequest, fmt.Sprintf("mcp: JSON-RPC batches are not allowed in protocol %s (only before %s)", version, versionNoBatch))
		return
	}
	if version >= versionStateless {
		if err := checkStandardHeaders(x.r.Header, msgs); err != nil {
			x.badMessage(http.StatusBadRequest, CodeHeaderMismatch, err.Error())
			return
		}
	}

	// Decide every message before anything is forwarded.
	verdicts := make([]verdict, len(msgs))
	var allowed []*message
	var denials [][]byte // error responses to denied calls
	for i, m := range msgs {
		v := x.d.decide(m)
		if v.allow && m.kind == kindResponse && x.sess != nil && !x.sess.takeReply(idKey(m.id)) {
			// Only an answer to a request the server sent this session
			// goes back upstream.
			v = verdict{code: CodeDenied, reason: "mcp: response to a request the server did not send this session (not forwarded)"}
		}
		verdicts[i] = v
		if v.allow {
			allowed = append(allowed, m)
			continue
		}
		x.p.auditNow(&x.d, x.start, methodOf(m), v, x.sid)
		if m.kind == kindCall {
			denials = append(denials, rpcError(m.id, v.code, v.reason))
		}
	}
	if len(allowed) == 0 {
		x.answerDenials(batch, denials, verdicts)
		return
	}

	// Remember list requests, to filter their answers wherever they arrive.
	var lists map[string]string
	remember := func(m *message, method string) {
		if lists == nil {
			lists = map[string]string{}
		}
		lists[idKey(m.id)] = method
		if x.sess != nil {
			x.sess.remember(m.id, method)
		}
	}
	for _, m := range allowed {
		if m.kind == kindCall && m.method == "tools/call" && m.params["task"] != nil {
			// A task-augmented call: its answer names a task, recorded as
			// the caller's so tasks/* can be decided.
			remember(m, methodTaskCall)
		}
		if m.kind == kindCall && listMethods[m.method] {
			remember(m, m.method)
		}
	}

	// The id an error about the whole POST answers (none for a batch).
	var callID any
	if !batch {
		callID = msgs[0].id
	}

	// A new session takes one of the caller's slots before the upstream
	// is asked to open it.
	if x.sid == "" && slices.ContainsFunc(allowed, func(m *message) bool { return m.method == "initialize" }) {
		if !x.reserveSession(callID) {
			return
		}
		defer x.releaseSession()
	}

	// Record what is allowed before anything is forwarded, in one piece:
	// a batch is recorded whole or refused whole, never half. The records
	// become durable while the upstream works.
	evs := make([]api.AuditEvent, 0, len(allowed))
	for i, m := range msgs {
		if verdicts[i].allow {
			evs = append(evs, x.p.event(&x.d, x.start, methodOf(m), verdicts[i], x.sid))
		}
	}
	durable, err := x.p.record(evs...)
	if err != nil {
		x.auditFailed(callID, err)
		return
	}

	var out []byte
	if batch {
		out = encodeBatch(allowed)
	} else {
		out = allowed[0].encode()
	}
	req := x.upstreamRequest(http.MethodPost, out)
	req.Header.Set("Content-Type", "application/json")
	copyHeaders(req.Header, x.r.Header, "Accept", hdrSession, hdrVersion)
	if version >= versionStateless && !batch && allowed[0].kind != kindResponse {
		// Headers from what was decided, not from what was sent.
		req.Header.Set(hdrMethod, allowed[0].method)
		if n := verdicts[0].name; n != "" {
			req.Header.Set(hdrName, n)
		}
		for k, vs := range x.r.Header {
			if strings.HasPrefix(k, hdrParamPrefix) {
				req.Header[k] = vs // the upstream checks them against the body
			}
		}
	}
	resp, err := x.p.rt.RoundTrip(req)
	x.waitDurable(durable)
	if err != nil {
		writeRPCError(x.w, http.StatusBadGateway, callID, codeInternal, fmt.Sprintf("mcp: upstream of %q unreachable: %v", x.d.svc.Name, err))
		return
	}
	defer resp.Body.Close()
	if !x.bindSession(resp, msgs, version) {
		return
	}
	x.relay(resp, lists, denials)
}

// auditFailed refuses a call whose audit record could not be written: the
// proxy fails closed, and nothing was forwarded.
func (x *exchange) auditFailed(id any, err error) {
	x.p.log.Error("mcp: audit log unavailable; call refused", "service", x.d.svc.Name, "caller", x.d.caller.ID, "err", err)
	status := http.StatusServiceUnavailable
	if id != nil {
		status = http.StatusOK // an answer to the call, which the client shows
	}
	writeRPCError(x.w, status, id, codeInternal, "mcp: the serving node cannot record an audit event, so the call was not forwarded: "+err.Error())
}

// waitDurable waits until the audit records of a forwarded call are
// durable, before its answer goes out. A failure is logged: the call has
// happened, and withholding its answer would not undo it.
func (x *exchange) waitDurable(durable func() error) {
	if durable == nil {
		return
	}
	if err := durable(); err != nil {
		x.p.log.Error("mcp: audit event of a forwarded call may not be durable", "service", x.d.svc.Name, "caller", x.d.caller.ID, "err", err)
	}
}

// upstreamRequest is a request to the service's upstream on behalf of
// this exchange (cancelled with it). It is built directly rather than by
// http.NewRequest, which would parse the upstream's URL again per call.
func (x *exchange) upstreamRequest(method string, body []byte) *http.Request {
	u := x.d.svc.upstream
	req := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, 8),
		Host:       u.Host,
	}
	for k, vs := range x.d.svc.UpstreamHeader {
		req.Header[k] = vs
	}
	if body != nil {
		req.ContentLength = int64(len(body))
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return req.WithContext(x.r.Context())
}

// readAllSized reads a body of at most max bytes, returning max+1 bytes
// when there are more. A declared length sizes the buffer once.
func readAllSized(r io.Reader, declared, max int64) ([]byte, error) {
	if declared < 0 || declared > max {
		return io.ReadAll(io.LimitReader(r, max+1))
	}
	buf := make([]byte, declared, declared+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	// An HTTP body ends at its declared length, which one byte of probe
	// confirms without a buffer per call; anything more reads on to the
	// limit, as without a declared length.
	var probe [1]byte
	switch _, err := io.ReadFull(r, probe[:]); {
	case err == io.EOF:
		return buf, nil
	case err != nil:
		return nil, err
	}
	rest, err := io.ReadAll(io.LimitReader(r, max-declared))
	if err != nil {
		return nil, err
	}
	return append(append(buf, probe[0]), rest...), nil
}

// bindSession records a session id the upstream issued as the caller's, and
// refuses an answer that would hand the caller someone else's session.
func (x *exchange) bindSession(resp *http.Response, msgs []*message, version string) bool {
	if resp.StatusCode == http.StatusNotFound && x.sess != nil {
		x.dropSession()
	}
	got := resp.Header.Get(hdrSession)
	if got == "" || got == x.sid {
		return true
	}
	if x.sid != "" {
		writeRPCError(x.w, http.StatusBadGateway, nil, codeInternal, "mcp: upstream changed the session id")
		return false
	}
	if version == "" {
		for _, m := range msgs {
			if m.method == "initialize" {
				version = str(m.params["protocolVersion"])
			}
		}
	}
	svc := x.d.svc
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if s := svc.sessions[got]; s != nil && s.owner != x.d.caller.ID {
		x.p.log.Warn("mcp: upstream reissued a session id of another caller", "service", svc.Name)
		writeRPCError(x.w, http.StatusBadGateway, nil, codeInternal, "mcp: upstream issued a session id already in use")
		return false
	} else if s == nil {
		ns := &session{owner: x.d.caller.ID, version: version}
		ns.touch()
		svc.sessions[got] = ns
		if x.reserved {
			x.reserved = false // the session holds the slot now
		} else {
			svc.held[ns.owner]++ // opened by something else than initialize
		}
	}
	return true
}

// answerDenials answers a POST none of whose messages was allowed.
func (x *exchange) answerDenials(batch bool, denials [][]byte, verdicts []verdict) {
	switch {
	case len(denials) == 0:
		// Only notifications or responses, all denied.
		writeRPCError(x.w, http.StatusForbidden, nil, verdicts[0].code, verdicts[0].reason)
	case batch:
		x.w.Header().Set("Content-Type", "application/json")
		x.w.WriteHeader(http.StatusOK)
		x.w.Write(joinBatch(denials))
	default:
		x.w.Header().Set("Content-Type", "application/json")
		x.w.WriteHeader(http.StatusOK)
		x.w.Write(denials[0])
	}
}

// badMessage answers a POST that could not be decided at all.
func (x *exchange) badMessage(status, code int, msg string) {
	x.p.auditNow(&x.d, x.start, "", verdict{code: code, reason: msg}, x.sid)
	writeRPCError(x.w, status, nil, code, msg)
}

// checkStandardHeaders checks that the Mcp-Method and Mcp-Name headers of a
// 2026-07-28 request agree with its body.
func checkStandardHeaders(h http.Header, msgs []*message) error {
	if len(msgs) != 1 || msgs[0].kind == kindResponse {
		return nil
	}
	m := msgs[0]
	hm := h.Get(hdrMethod)
	if hm == "" {
		return errors.New("mcp: missing required Mcp-Method header")
	}
	if hm != m.method {
		return fmt.Errorf("mcp: header mismatch: Mcp-Method %q does not match body method %q", hm, m.method)
	}
	var key string
	switch m.method {
	case "tools/call", "prompts/get":
		key = "name"
	case "resources/read":
		key = "uri"
	default:
		return nil
	}
	hn, bn := h.Get(hdrName), str(m.params[key])
	if hn == "" {
		return fmt.Errorf("mcp: missing required Mcp-Name header for %s", m.method)
	}
	if hn != bn {
		return fmt.Errorf("mcp: header mismatch: Mcp-Name %q does not match body %s %q", hn, key, bn)
	}
	return nil
}

func methodOf(m *message) string {
	if m.kind == kindResponse {
		return "response"
	}
	return m.method
}

// copyHeaders copies the named headers from src to dst.
func copyHeaders(dst, src http.Header, names ...string) {
	for _, n := range names {
		if vs := src.Values(n); len(vs) > 0 {
			dst[http.CanonicalHeaderKey(n)] = append([]string(nil), vs...)
		}
	}
}

func baseMediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

// rpcError encodes a JSON-RPC error response.
func rpcError(id any, code int, msg string) []byte {
	return encodeValue(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error":   map[string]any{"code": code, "message": msg},
	})
}

func joinBatch(items [][]byte) []byte {
	return append(append([]byte{'['}, bytes.Join(items, []byte{','})...), ']')
}

// writeRPCError answers with a JSON-RPC error body and an HTTP status.
func writeRPCError(w http.ResponseWriter, status int, id any, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(rpcError(id, code, msg))
}
