package mcp

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// DefaultMaxMessageBytes is the request body limit when
// Config.MaxMessageBytes is zero.
const DefaultMaxMessageBytes = 4 << 20

// Caller is who the tunnel says is calling. It is never taken from the
// request.
type Caller struct {
	Name string   // node name
	ID   string   // SPIFFE ID
	Tags []string // with the "tag:" prefix, e.g. "tag:billing"
}

// identity converts the caller to the policy's form (tags without "tag:").
func (c Caller) identity() policy.Identity {
	return policy.Identity{Name: c.Name, ID: c.ID, Tags: stripTags(c.Tags)}
}

// Service is one mesh-only MCP service this node serves.
type Service struct {
	Name string
	Tags []string // "tag:x" form
	URL  string   // Streamable HTTP upstream; must be on loopback
	// UpstreamHeader is added to every request to the upstream: the
	// credential of a stdio upstream, which answers only its proxy. It is
	// never shown to callers.
	UpstreamHeader http.Header
	// MaxSessionsPerCaller bounds the sessions one caller may hold open
	// with this service at once (0: DefaultMaxSessionsPerCaller), so that
	// no caller takes what an upstream has for everyone: a stdio upstream
	// runs a process per session, and has a fixed number of them.
	MaxSessionsPerCaller int
}

// DefaultMaxSessionsPerCaller is the session quota of a caller when
// Service.MaxSessionsPerCaller is zero: room for a host running many
// agents at once, while bounding what any one node can make the proxy and
// the upstream hold.
const DefaultMaxSessionsPerCaller = 256

// Config configures a Proxy.
type Config struct {
	// Node is the serving node's name, for audit events.
	Node string
	// DigestKey keys the digests of call arguments in audit events
	// (ArgsDigest). The node keeps one per node, so digests stay
	// comparable across restarts; without one, New draws a random key,
	// and digests are comparable only within the Proxy's life.
	DigestKey []byte
	// WhoIs names the caller at a remote address. An error refuses the
	// request with HTTP 403; nothing is forwarded.
	WhoIs func(remote netip.Addr) (Caller, error)
	// Policy returns the current compiled policy and its version. A nil
	// policy denies every call.
	Policy func() (*policy.Policy, uint64)
	// Audit records decisions, with every field but Seq filled, all or
	// none: the allowed messages of one POST (a batch) come in one call,
	// so that a failure part way never leaves a record of calls that were
	// not forwarded. For calls that are allowed it runs before anything is
	// forwarded, and an error refuses them: nothing reaches an upstream
	// without an audit record. It returns a function that waits until the
	// events are durable (nil when they are already); the proxy forwards
	// the calls meanwhile and releases the answer only after that wait, so
	// the fsync overlaps the upstream's work and no caller sees an answer
	// whose event could still be lost.
	Audit func([]api.AuditEvent) (durable func() error, err error)
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// MaxMessageBytes bounds a request body (default DefaultMaxMessageBytes).
	// A larger body gets a JSON-RPC error and is never forwarded.
	MaxMessageBytes int64
	// CheckUpstream, when set, is asked about every new connection the
	// default transport makes to an upstream, with the address the
	// connection reached (ip:port, once it is made), and an error refuses
	// it before anything is sent: the node checks that the port is still
	// served by the local user who served it when mcpmesh began, and not
	// by another user who bound it while the upstream was down.
	CheckUpstream func(remote string) error
	// MaxConnsPerSource bounds the connections one source address may
	// hold open to Serve at once (default DefaultMaxConnsPerSource).
	MaxConnsPerSource int
	// Upstream sends requests to the upstreams. The default is the
	// proxy's own loopback HTTP/1.1 client (see upstreamTransport): no
	// overall timeout (SSE streams are long-lived), no proxy from the
	// environment, no redirects followed.
	Upstream http.RoundTripper
}

// Proxy is the MCP-aware L7 proxy for a node's mesh-only services. Its
// methods are safe for concurrent use.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	rt     http.RoundTripper
	ownsTr *upstreamTransport // the default transport, closed by Close

	front *front // the HTTP/1.1 server of every Serve

	mu       sync.Mutex
	services map[string]*service
}

// service is a Service as the proxy serves it.
type service struct {
	Service
	upstream *url.URL
	dst      policy.Service

	*state
}

// state is what a service holds about its callers. Replacing a service
// with the same upstream keeps it, shared by the old value (requests in
// flight) and the new.
type state struct {
	// sessions maps an upstream Mcp-Session-Id to its state; held counts,
	// by SPIFFE ID, each caller's sessions and the initializes it has in
	// flight; tasks maps a task id to the SPIFFE ID whose call created it.
	mu       sync.Mutex
	sessions map[string]*session
	held     map[string]int
	tasks    map[string]string
}

// quota is the number of sessions one caller may hold with svc.
func (svc *service) quota() int {
	if svc.MaxSessionsPerCaller > 0 {
		return svc.MaxSessionsPerCaller
	}
	return DefaultMaxSessionsPerCaller
}

// reserveLocked takes one of owner's session slots for an initialize on
// its way upstream; false when owner has none left. The caller holds
// svc.mu.
func (svc *service) reserveLocked(owner string) bool {
	if svc.held[owner] >= svc.quota() {
		return false
	}
	svc.held[owner]++
	return true
}

// releaseLocked gives back one of owner's session slots.
func (svc *service) releaseLocked(owner string) {
	if svc.held[owner]--; svc.held[owner] <= 0 {
		delete(svc.held, owner)
	}
}

// removeLocked forgets a session and gives back its owner's slot.
func (svc *service) removeLocked(id string) {
	if s := svc.sessions[id]; s != nil {
		delete(svc.sessions, id)
		svc.releaseLocked(s.owner)
	}
}

// maxTasks bounds the task table of a service; the oldest entries go first.
const maxTasks = 10_000

// addTask records who created a task.
func (svc *service) addTask(id, owner string) {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.tasks == nil {
		svc.tasks = map[string]string{}
	}
	if _, ok := svc.tasks[id]; ok {
		return // a task id is never handed to a second owner
	}
	if len(svc.tasks) >= maxTasks {
		for k := range svc.tasks {
			delete(svc.tasks, k)
			break
		}
	}
	svc.tasks[id] = owner
}

// taskOwner returns who created a task.
func (svc *service) taskOwner(id string) (string, bool) {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	o, ok := svc.tasks[id]
	return o, ok
}

// sessionIdle is how long a session may go without a request before the
// proxy ends it, so that clients which never send DELETE neither grow the
// table without bound nor keep their quota (and an upstream's processes)
// taken for good.
const sessionIdle = 30 * time.Minute

// sweepLocked forgets the sessions idle for longer than sessionIdle (no
// request begun or ended since, none in progress) and returns their ids,
// for the caller to end upstream. It runs before a new session is counted,
// so its cost follows the rate of initializes. The caller holds svc.mu.
func (svc *service) sweepLocked() []string {
	cutoff := time.Now().Add(-sessionIdle).UnixNano()
	var idle []string
	for id, s := range svc.sessions {
		if s.active.Load() == 0 && s.lastUsed.Load() < cutoff {
			idle = append(idle, id)
		}
	}
	for _, id := range idle {
		svc.removeLocked(id)
	}
	return idle
}

// endSessions asks svc's upstream to end sessions the proxy has forgotten
// (DELETE, as a client would), so that what the upstream holds for them,
// a process for a stdio upstream, goes too. It does not wait.
func (p *Proxy) endSessions(svc *service, ids []string) {
	for _, id := range ids {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodDelete, svc.upstream.String(), nil)
			if err != nil {
				return
			}
			for k, vs := range svc.UpstreamHeader {
				req.Header[k] = vs
			}
			req.Header.Set(hdrSession, id)
			resp, err := p.rt.RoundTrip(req)
			if err != nil {
				p.log.Debug("mcp: ending an idle session upstream", "service", svc.Name, "err", err)
				return
			}
			resp.Body.Close()
		}()
	}
}

// session is an upstream session and the identity that opened it.
type session struct {
	owner    string       // the caller's SPIFFE ID
	lastUsed atomic.Int64 // unix nanoseconds of the last request, begun or ended
	active   atomic.Int32 // requests (streams included) in progress

	mu      sync.Mutex
	version string              // negotiated protocol version, once known
	pending map[string]string   // id key -> method of list requests in flight
	replies map[string]struct{} // ids of server-to-client requests awaiting the client's answer
}

// expectReply records a request the server sent to the client, so that
// only an answer to it is forwarded back.
func (s *session) expectReply(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replies == nil {
		s.replies = map[string]struct{}{}
	}
	if len(s.replies) >= maxPending {
		for k := range s.replies {
			delete(s.replies, k)
			break
		}
	}
	s.replies[key] = struct{}{}
}

// takeReply reports whether the server is waiting for an answer with this
// id, and stops waiting.
func (s *session) takeReply(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.replies[key]
	delete(s.replies, key)
	return ok
}

// maxPending bounds the list requests remembered per session.
const maxPending = 1024

func (s *session) touch() { s.lastUsed.Store(time.Now().UnixNano()) }

func (s *session) remember(id any, method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[string]string{}
	}
	if len(s.pending) >= maxPending {
		for k := range s.pending {
			delete(s.pending, k)
			break
		}
	}
	s.pending[idKey(id)] = method
}

// protocol returns the session's protocol version: hdr, when the request
// names one (and the session learns it), else what the session knows.
func (s *session) protocol(hdr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hdr == "" {
		return s.version
	}
	if s.version == "" {
		s.version = hdr
	}
	return hdr
}

func (s *session) lookup(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.pending[key]
	return m, ok
}

func (s *session) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, key)
}

// New returns a Proxy with no services.
func New(cfg Config) *Proxy {
	p := &Proxy{cfg: cfg, services: map[string]*service{}}
	p.log = cfg.Logger
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.front = newFront(p.Handler(), p.log, requestReadTimeout)
	if len(p.cfg.DigestKey) == 0 {
		p.cfg.DigestKey = make([]byte, 32)
		rand.Read(p.cfg.DigestKey) // never fails (crypto/rand)
	}
	if p.cfg.MaxMessageBytes <= 0 {
		p.cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	p.rt = cfg.Upstream
	if p.rt == nil {
		p.ownsTr = newUpstreamTransport()
		p.ownsTr.check = cfg.CheckUpstream
		p.rt = p.ownsTr
	}
	return p
}

// SetService adds or replaces a service. It refuses a URL that is not http
// or whose host is not a loopback IP or "localhost". Replacing a service
// keeps its sessions when the URL is unchanged.
func (p *Proxy) SetService(s Service) error {
	if s.Name == "" || strings.ContainsAny(s.Name, "/ ") {
		return fmt.Errorf("mcp: service name %q: must be non-empty without '/' or spaces", s.Name)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return fmt.Errorf("mcp: service %q: upstream URL: %w", s.Name, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("mcp: service %q: upstream %q: scheme must be http (a loopback upstream needs no TLS)", s.Name, s.URL)
	}
	if !loopbackHost(u.Hostname()) {
		return fmt.Errorf("mcp: service %q: upstream %q is not on a loopback address (use 127.0.0.1, ::1 or localhost)", s.Name, s.URL)
	}
	if u.User != nil {
		return fmt.Errorf("mcp: service %q: upstream URL must not carry credentials", s.Name)
	}
	svc := &service{
		Service:  s,
		upstream: u,
		dst:      policy.Service{Name: s.Name, Tags: stripTags(s.Tags)},
		state:    &state{sessions: map[string]*session{}, held: map[string]int{}},
	}
	svc.Tags = append([]string(nil), s.Tags...)
	svc.UpstreamHeader = s.UpstreamHeader.Clone()
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.services[s.Name]; old != nil && old.URL == s.URL {
		svc.state = old.state // the same upstream: its sessions and tasks live on
	}
	p.services[s.Name] = svc
	return nil
}

// RemoveService stops serving a service. Requests in flight finish; its
// sessions are forgotten, and ended upstream.
func (p *Proxy) RemoveService(name string) {
	p.mu.Lock()
	svc := p.services[name]
	delete(p.services, name)
	p.mu.Unlock()
	if svc == nil {
		return
	}
	// The upstream may run on without the proxy: end what it holds for
	// sessions no caller can reach any more.
	svc.mu.Lock()
	ids := make([]string, 0, len(svc.sessions))
	for id := range svc.sessions {
		ids = append(ids, id)
	}
	svc.mu.Unlock()
	p.endSessions(svc, ids)
}

func (p *Proxy) service(name string) *service {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.services[name]
}

// Handler returns the HTTP handler serving /svc/{name}/mcp for every
// service. The caller is named by WhoIs from the request's RemoteAddr.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/svc/{name}/mcp", p.serveMCP)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeRPCError(w, http.StatusNotFound, nil, codeNotFound, "mcp: no MCP endpoint at "+r.URL.Path+" (services are at /svc/NAME/mcp)")
	})
	return mux
}

// Serve serves Handler on ln until Close. SSE streams may live long: there
// is no timeout on a request once it is read, only on reading its headers
// (10 s), reading it whole (requestReadTimeout), and idling between
// requests (2 minutes). Headers may take 64 KiB; each mesh address may hold
// Config.MaxConnsPerSource connections.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.front.serve(limitPerSource(ln, cmp.Or(p.cfg.MaxConnsPerSource, DefaultMaxConnsPerSource)))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("mcp: serve: %w", err)
}

// Close stops every Serve (closing their listeners and connections, SSE
// streams included) and the upstream connections of the default transport.
func (p *Proxy) Close() error {
	err := p.front.close()
	if p.ownsTr != nil {
		p.ownsTr.Close()
	}
	if err != nil {
		return fmt.Errorf("mcp: close: %w", err)
	}
	return nil
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

func stripTags(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		out = append(out, strings.TrimPrefix(t, "tag:"))
	}
	return out
}
