// Package coordinator is the control plane of mcpmesh: it issues SPIFFE
// identities from the trust domain's CA, keeps the node registry in its
// store, allocates mesh addresses and streams signed netmaps to nodes. It is
// the glue of the control server; the wire types live in coordinator/api and
// persistence in coordinator/store. It never imports the node.
package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/coordinator/store"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// Defaults of a coordinator.
const (
	DefaultSVIDTTL   = time.Hour
	DefaultNetmapTTL = 72 * time.Hour
	heartbeatEvery   = 10 * time.Second

	// DefaultReadHeaderTimeout bounds the TLS handshake and a request's
	// headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultBodyReadTimeout bounds reading a request body.
	DefaultBodyReadTimeout = 30 * time.Second
	// DefaultIdleTimeout closes keep-alive connections left idle.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConns bounds open connections. A node holds up to two (its
	// netmap stream and one for everything else), so it leaves room for
	// 10,000 nodes reconnecting while their old connections linger.
	DefaultMaxConns = 1 << 16
)

// Config tunes a coordinator; the zero value gives the defaults.
type Config struct {
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests pass a fake one.
	Now func() time.Time
	// SVIDTTL is the lifetime of node SVIDs (default 1h).
	SVIDTTL time.Duration
	// NetmapTTL is how long a node may keep using a netmap without hearing
	// from the coordinator (default 72h): the longest a node cut off from
	// the coordinator goes on with peers and a policy that may have been
	// revoked. Connected nodes get a fresh expiry at half of it.
	NetmapTTL time.Duration
	// Store replaces the embedded SQLite store (for PostgreSQL later).
	Store store.Store
	// AuditRetention is how long the audit trail keeps an event, counted
	// from when the coordinator received it (by Now), not from the event's
	// own time: that is the node's clock, and a node whose clock is years
	// behind must not see its events deleted the day they arrive. Older
	// events are deleted while Serve runs.
	// Zero keeps every event: how long a trail must be kept is a matter
	// of law and of each organisation (years, for some), so nothing is
	// deleted unless an admin says so.
	AuditRetention time.Duration

	// ReadHeaderTimeout bounds the TLS handshake and the reading of a
	// request's headers (default DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds the reading of a request body, counted from
	// when the headers were read, on every endpoint but the netmap stream
	// (default DefaultBodyReadTimeout). A client that trickles its body
	// has its connection closed when it runs out.
	BodyReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that carries no request
	// for this long (default DefaultIdleTimeout). A netmap stream is a
	// request in progress, never idle.
	IdleTimeout time.Duration
	// MaxConns bounds the connections Serve holds open at once (default
	// DefaultMaxConns); past it, new ones wait in the listen backlog until
	// one closes.
	MaxConns int
}

// Server is a running coordinator. Create one with Open, serve its Handler
// (or call Serve), and Close it when done.
type Server struct {
	log       *slog.Logger
	now       func() time.Time
	svidTTL   time.Duration
	netmapTTL time.Duration
	td        spiffeid.TrustDomain
	ca        *identity.CA
	netmapKey ed25519.PrivateKey
	store     store.Store
	tlsCert   tls.Certificate
	handler   http.Handler // the routes behind the body deadline

	readHeaderTimeout time.Duration
	bodyReadTimeout   time.Duration
	idleTimeout       time.Duration
	maxConns          int

	// mu guards the in-memory view of the registry and the subscribers.
	mu struct {
		sync.Mutex
		version  uint64
		nodes    map[string]*store.Node
		subs     map[string]*subscriber
		services map[string]store.Service
		vis      *visibility
		// changes limits, per node, the changes it makes to its own
		// record (allowChangeLocked).
		changes map[string]*rate.Limiter
		// reuseWarned is when each node was last warned about for
		// reusing audit sequence numbers (handleAudit).
		reuseWarned map[string]time.Time
		// shuttingDown refuses new streams once shutdown waits for the
		// open ones.
		shuttingDown bool
	}

	// closing is closed by Close; streams watch it.
	closing   chan struct{}
	closeOnce sync.Once
	streams   sync.WaitGroup

	auditRetention time.Duration
}

// Open loads a data directory written by Init and its store.
func Open(ctx context.Context, dir string, cfg Config) (*Server, error) {
	ld, err := loadDataDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:       cfg.Logger,
		now:       cfg.Now,
		svidTTL:   cfg.SVIDTTL,
		netmapTTL: cfg.NetmapTTL,
		td:        ld.td,
		ca:        ld.ca,
		netmapKey: ld.netmapKey,
		store:     cfg.Store,
		closing:   make(chan struct{}),

		auditRetention: cfg.AuditRetention,

		readHeaderTimeout: orDefault(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		bodyReadTimeout:   orDefault(cfg.BodyReadTimeout, DefaultBodyReadTimeout),
		idleTimeout:       orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		maxConns:          orDefault(cfg.MaxConns, DefaultMaxConns),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.SVIDTTL < 0 || cfg.NetmapTTL < 0 || cfg.AuditRetention < 0 {
		return nil, fmt.Errorf("coordinator: negative lifetime (SVID %s, netmap %s, audit retention %s)", cfg.SVIDTTL, cfg.NetmapTTL, cfg.AuditRetention)
	}
	if cfg.ReadHeaderTimeout < 0 || cfg.BodyReadTimeout < 0 || cfg.IdleTimeout < 0 || cfg.MaxConns < 0 {
		return nil, fmt.Errorf("coordinator: negative limit (read header %s, body read %s, idle %s, connections %d)",
			cfg.ReadHeaderTimeout, cfg.BodyReadTimeout, cfg.IdleTimeout, cfg.MaxConns)
	}
	if s.svidTTL == 0 {
		s.svidTTL = DefaultSVIDTTL
	}
	if s.netmapTTL == 0 {
		s.netmapTTL = DefaultNetmapTTL
	}
	if s.store == nil {
		db, err := store.OpenSQLite(filepath.Join(dir, fileDB))
		if err != nil {
			return nil, err
		}
		s.store = db
	}
	if err := s.loadState(ctx); err != nil {
		s.store.Close()
		return nil, err
	}
	if err := s.issueServerCert(); err != nil {
		s.store.Close()
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) loadState(ctx context.Context) error {
	nodes, err := s.store.Nodes(ctx)
	if err != nil {
		return err
	}
	v, err := s.store.Version(ctx)
	if err != nil {
		return err
	}
	s.mu.nodes = make(map[string]*store.Node, len(nodes))
	s.mu.subs = make(map[string]*subscriber)
	for i := range nodes {
		s.mu.nodes[nodes[i].Name] = &nodes[i]
	}
	s.mu.version = v
	svcs, err := s.store.Services(ctx)
	if err != nil {
		return err
	}
	s.mu.services = make(map[string]store.Service, len(svcs))
	s.mu.changes = map[string]*rate.Limiter{}
	s.mu.reuseWarned = map[string]time.Time{}
	for _, sv := range svcs {
		s.mu.services[sv.Name] = sv
	}
	s.mu.vis = newVisibility()
	pv, err := s.store.Policy(ctx, 0)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.log.Warn("no policy applied yet: the mesh is open at the network layer and every MCP call is denied; apply one with `mcpmesh policy apply`")
	case err != nil:
		return err
	default:
		pol, perr := policy.Parse(pv.Filename, pv.Source)
		if perr != nil {
			// Fail closed: a stored policy this build cannot compile must
			// not turn into an open mesh.
			s.log.Error("stored policy no longer compiles; denying everything until a new one is applied", "version", pv.Version, "err", perr)
			pol, perr = policy.Parse("deny-all", []byte("{}"))
			if perr != nil {
				return fmt.Errorf("coordinator: empty policy: %w", perr)
			}
		}
		s.mu.vis.pol, s.mu.vis.polVer = pol, pv.Version
	}
	s.mu.vis.rebuild(s.mu.nodes, svcs)
	s.warnIgnoredTagsLocked()
	return nil
}

// issueServerCert gives the coordinator a fresh TLS certificate on every
// start. Clients authorise it by SPIFFE ID, not by host name, so it works
// whatever address they dial.
func (s *Server) issueServerCert() error {
	key, err := identity.GenerateKey()
	if err != nil {
		return err
	}
	leaf, err := s.ca.IssueServerCert(key.Public(), identity.CoordinatorID(s.td),
		[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, 30*24*time.Hour, s.now())
	if err != nil {
		return err
	}
	s.tlsCert = tls.Certificate{
		Certificate: [][]byte{leaf.Raw, s.ca.Certificate().Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}
	return nil
}

// TLSConfig is the listener's TLS configuration: the coordinator's
// certificate (with the CA in the chain so new nodes can match the token's
// fingerprint) and optional client SVIDs verified against the trust bundle.
func (s *Server) TLSConfig() *tls.Config {
	return identity.ServerTLSConfig(s.tlsCert, s.ca.Bundle())
}

// Handler serves the control API; it expects TLS with TLSConfig.
func (s *Server) Handler() http.Handler { return s.handler }

// TrustDomain is the coordinator's trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// CAFingerprint is what join tokens carry.
func (s *Server) CAFingerprint() identity.Fingerprint { return s.ca.Fingerprint() }

// orDefault is v, or def when v is zero.
func orDefault[T time.Duration | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Serve accepts connections on ln until ctx ends or Close is called. It
// holds at most Config.MaxConns connections (TLS handshakes included), and
// closes those that are slow to send headers or a body, or that sit idle
// (Config's timeouts).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: s.readHeaderTimeout,
		IdleTimeout:       s.idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(netutil.LimitListener(ln, s.maxConns), hs.TLSConfig)) }()
	if s.auditRetention > 0 {
		// The pruner stops, even in the middle of a pass, when Serve
		// returns or Close is called; Close waits for it before the store
		// closes (registered under the lock that shutdownStreams takes
		// before it waits).
		pctx, stopPruning := context.WithCancel(ctx)
		defer stopPruning()
		s.mu.Lock()
		if !s.mu.shuttingDown {
			s.streams.Add(2)
			go func() {
				defer s.streams.Done()
				select {
				case <-s.closing:
					stopPruning()
				case <-pctx.Done():
				}
			}()
			go func() {
				defer s.streams.Done()
				s.pruneAudit(pctx)
			}()
		}
		s.mu.Unlock()
	}
	select {
	case <-ctx.Done():
	case <-s.closing:
	case err := <-errc:
		return fmt.Errorf("coordinator: serve: %w", err)
	}
	s.shutdownStreams()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// pruneAudit deletes audit events older than the retention now and then
// (every 1/24 of it, at most hourly), until ctx ends.
func (s *Server) pruneAudit(ctx context.Context) {
	every := min(max(s.auditRetention/24, 100*time.Millisecond), time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		before := s.now().Add(-s.auditRetention)
		n, err := s.store.PruneAudit(ctx, before)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("audit retention: deleting old events failed", "err", err)
		case n > 0:
			s.log.Info("audit retention: old events deleted", "events", n, "before", before)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Server) shutdownStreams() {
	s.mu.Lock()
	s.mu.shuttingDown = true
	s.mu.Unlock()
	s.closeOnce.Do(func() { close(s.closing) })
	s.streams.Wait()
}

// Close stops the streams and closes the store. Serve returns after Close.
func (s *Server) Close() error {
	s.shutdownStreams()
	return s.store.Close()
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("POST "+api.PathEnroll, s.handleEnroll)
	m.HandleFunc("POST "+api.PathRenew, s.nodeOnly(s.handleRenew))
	m.HandleFunc("GET "+api.PathNetmap, s.nodeOnly(s.handleNetmap))
	m.HandleFunc("POST "+api.PathEndpoints, s.nodeOnly(s.handleEndpoints))
	m.HandleFunc("POST "+api.PathAdminTokens, s.adminOnly(s.handleTokenCreate))
	m.HandleFunc("GET "+api.PathAdminNodes, s.adminOnly(s.handleNodesList))
	m.HandleFunc("POST "+api.PathAdminRevoke+"{name}", s.adminOnly(s.handleRevoke))
	m.HandleFunc("POST "+api.PathServices, s.nodeOnly(s.handleServices))
	m.HandleFunc("POST "+api.PathAudit, s.nodeOnly(s.handleAudit))
	m.HandleFunc("POST "+api.PathAdminAudit, s.adminOnly(s.handleAuditQuery))
	m.HandleFunc("POST "+api.PathExposure, s.nodeOnly(s.handleExposure))
	m.HandleFunc("GET "+api.PathAdminExposure, s.adminOnly(s.handleExposureList))
	m.HandleFunc("GET "+api.PathAdminServices, s.adminOnly(s.handleServicesList))
	m.HandleFunc("GET "+api.PathAdminPolicy, s.adminOnly(s.handlePolicyGet))
	m.HandleFunc("POST "+api.PathAdminPolicy, s.adminOnly(s.handlePolicyApply))
	m.HandleFunc("POST "+api.PathAdminPolicyCheck, s.adminOnly(s.handlePolicyCheck))
	m.HandleFunc("GET "+api.PathAdminPolicyHistory, s.adminOnly(s.handlePolicyHistory))
	m.HandleFunc("POST "+api.PathAdminPolicyRollback, s.adminOnly(s.handlePolicyRollback))
	m.HandleFunc("POST "+api.PathAdminPolicyExplain, s.adminOnly(s.handlePolicyExplain))
	s.handler = s.bodyDeadline(m)
}

// bodyDeadline gives the body of every request but the netmap stream's a
// read deadline of Config.BodyReadTimeout, so a client that sends its
// headers and then trickles the body cannot hold a connection (and a
// handler) for as long as it likes. It wraps the whole mux: a request the
// mux refuses (unknown path, wrong method) has its unread body drained by
// net/http, under the same deadline. The stream is one long-lived request
// with no body, and nothing may cut it. Once a body has been read to its
// end the deadline is lifted: net/http keeps reading the connection in the
// background while the handler runs, and a deadline passing then would
// cancel the request's context under a handler that was merely slow.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || (r.Method == http.MethodGet && r.URL.Path == api.PathNetmap) {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(s.bodyReadTimeout)); err != nil {
			// Not a connection of ours (a test recorder); nothing to bound.
			s.log.Debug("no read deadline for request body", "path", r.URL.Path, "err", err)
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline when the body ends.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{}) // the connection is gone if this fails
	}
	return n, err
}

// caller is a node authenticated by its SVID.
type caller struct {
	name string
	id   spiffeid.ID
	leaf *x509.Certificate
}

type ctxKey struct{}

// nodeOnly admits requests whose client SVID names an enrolled, unrevoked node.
func (s *Server) nodeOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := identity.PeerID(r.TLS)
		if err != nil {
			httpError(w, http.StatusUnauthorized, "this endpoint needs the node's SVID (mTLS); enroll first with `mcpmesh up --token`")
			return
		}
		name, err := identity.NodeName(id)
		if err != nil || id.TrustDomain() != s.td {
			httpError(w, http.StatusForbidden, fmt.Sprintf("%s is not a node of %s", id, s.td))
			return
		}
		leaf, err := identity.PeerLeaf(r.TLS)
		if err != nil {
			httpError(w, http.StatusUnauthorized, err.Error())
			return
		}
		// A connection outlives the certificate that opened it; a request
		// on one whose SVID has since expired is refused.
		if !s.now().Before(leaf.NotAfter) {
			httpError(w, http.StatusUnauthorized, "the SVID this connection was opened with has expired; reconnect")
			return
		}
		s.mu.Lock()
		n, ok := s.mu.nodes[name]
		revoked := ok && n.Revoked()
		s.mu.Unlock()
		switch {
		case !ok:
			httpError(w, http.StatusForbidden, fmt.Sprintf("node %q is not enrolled", name))
			return
		case revoked:
			httpError(w, http.StatusForbidden, fmt.Sprintf("node %q has been revoked", name))
			return
		}
		ctx := context.WithValue(r.Context(), ctxKey{}, caller{name: name, id: id, leaf: leaf})
		h(w, r.WithContext(ctx))
	}
}

func callerOf(r *http.Request) caller { return r.Context().Value(ctxKey{}).(caller) }

// adminOnly admits requests whose client SVID is an admin of this trust domain.
func (s *Server) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := identity.PeerID(r.TLS)
		if err != nil {
			httpError(w, http.StatusUnauthorized, "admin commands need the admin credential: pass --data DIR or --admin FILE")
			return
		}
		if !identity.IsAdmin(id) || id.TrustDomain() != s.td {
			httpError(w, http.StatusForbidden, fmt.Sprintf("%s is not an admin of %s", id, s.td))
			return
		}
		// As for nodes: a keep-alive connection outlives the admin
		// certificate that opened it, and must not outlive its authority.
		leaf, err := identity.PeerLeaf(r.TLS)
		if err != nil {
			httpError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if !s.now().Before(leaf.NotAfter) {
			httpError(w, http.StatusUnauthorized, fmt.Sprintf("the admin certificate this connection was opened with expired at %s; reconnect with a valid admin credential", leaf.NotAfter.UTC().Format(time.RFC3339)))
			return
		}
		h(w, r)
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

// readJSON decodes a bounded, strict JSON body.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxRequestBytes)
	return readJSONUnbounded(w, r, v)
}

// readJSONUnbounded decodes a strict JSON body whose size the caller bounded.
func readJSONUnbounded(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			return false
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			httpError(w, http.StatusRequestTimeout, "request body not received in time")
			return false
		}
		httpError(w, http.StatusBadRequest, "malformed request: "+err.Error())
		return false
	}
	if dec.More() {
		httpError(w, http.StatusBadRequest, "malformed request: trailing data")
		return false
	}
	return true
}

// remoteIP is the source address of the control connection.
func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
