// Package node is the mcpmesh daemon that runs on every host: it enrolls
// with the coordinator once, keeps its keys and SVID in its state directory
// (renewing the SVID at half-life), runs the WireGuard tunnel, applies the
// signed netmaps it receives, and serves the LocalAPI for the CLI. It is the
// glue of the node; nothing imports it back but cmd and tests.
package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/mcp/policy"
	"github.com/mcpmesh/mcpmesh/mcp/stdioserve"
	"github.com/mcpmesh/mcpmesh/node/auditlog"
	"github.com/mcpmesh/mcpmesh/node/controlclient"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/tunnel"
	"github.com/mcpmesh/mcpmesh/tunnel/netstack"
)

// keepalive keeps NAT and firewall state open and makes a dead peer visible
// in its last-handshake time.
const keepalive = 25 * time.Second

// Config starts a node. Only StateDir is always required; Coordinator and
// Token are needed the first time, to enroll.
type Config struct {
	StateDir    string
	Coordinator string // https://host:port
	Token       string // join token, first start only
	Hostname    string // default: the host's name, made a valid DNS label
	// ListenPort is WireGuard's UDP port; 0 picks a free one.
	ListenPort uint16
	// Advertise overrides the endpoint peers use ("ip:port").
	Advertise string
	// SocketPath is the LocalAPI socket; "" means StateDir/mcpmesh.sock
	// and "-" disables the LocalAPI.
	SocketPath string
	Logger     *slog.Logger
	// NewTunnel builds the data plane; nil means userspace (netstack).
	NewTunnel func(tunnel.Config, *slog.Logger) (tunnel.Tunnel, error)
	// Firewall, when set, guards the mesh addresses on the host and locks
	// down upstream ports (serve --lockdown). It is installed before the
	// proxy listens, repaired when it drifts and removed on Close. Nil
	// means no host rules, and --lockdown is refused.
	Firewall Firewall
	// ExposureScanEvery is how often the node scans its host for MCP
	// servers reachable off the mesh and reports them; 0 disables the
	// periodic scan (`mcpmesh audit exposure` still runs one).
	ExposureScanEvery time.Duration
	// AuditFsyncEvery is how long an audit event may wait for its fsync.
	// Every event is written to the audit file before its call is
	// forwarded (a call that cannot be recorded is refused), so it
	// survives a crash of the daemon at once; the fsync, which makes it
	// survive a power cut, runs for all events of the span together. Zero
	// holds every answer until its event is fsynced: the strictest
	// setting, and on slow disks the costliest.
	AuditFsyncEvery time.Duration
}

// Node is a running node daemon.
type Node struct {
	log    *slog.Logger
	state  stateDir
	cfg    Config
	enr    *enrolled
	idKey  crypto.Signer
	td     spiffeid.TrustDomain
	tun    tunnel.Tunnel
	svid   *identity.RotatingSVID
	client *controlclient.Client
	audit  *auditlog.Log
	proxy  *mcp.Proxy
	// ownerOf finds who serves an address on this host
	// (platform.LocalListenerOwner; tests put another in its place).
	ownerOf func(netip.AddrPort) (uid int, found bool, err error)

	mu struct {
		sync.Mutex
		// held is the last verified netmap: the base of the next delta,
		// and what is saved. netmap is the view in force: held itself, or,
		// once held has expired without word from the coordinator (DESIGN
		// rule 5), an empty view with no peers, catalog or policy.
		held        *controlclient.Netmap
		netmap      *controlclient.Netmap
		expiry      *time.Timer // fires when held expires
		closed      bool
		byKey       map[tunnel.Key]api.Peer
		connected   bool
		controlErr  error
		svidExpires time.Time
		// svidReceived is when the node got the current SVID (or loaded
		// it at start), the base of its renewal time.
		svidReceived time.Time
		// services are what this node publishes (sent again on every
		// reconnect); policy is compiled from the netmap's bundle for them.
		services []api.ServiceSpec
		// servicesErr is the coordinator's refusal of the services this
		// node serves, shown by status until a set is taken.
		servicesErr error
		policy      *policy.Policy
		bundle      *api.PolicyBundle
		// upstreamOwner is, by port, the local user serving each HTTP
		// upstream when the node began to serve it (checkUpstreamOwner),
		// and upstreamPin the user a service's --upstream-user names
		// for its port, which wins over what is learnt.
		upstreamOwner map[uint16]int
		upstreamPin   map[uint16]int
		// pinUID is the uid each served service's --upstream-user named
		// when it was served, so that pins are rebuilt without asking
		// the user database under this lock.
		pinUID map[string]int
		// served are the services this node serves, as `serve` asked.
		served []localapi.ServeRequest
		stdio  map[string]*stdioserve.Server
	}

	// fwMu orders changes to the host firewall, so the rules installed
	// last are those of the latest change to the served services.
	fwMu sync.Mutex

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	done     chan struct{}
	downOnce sync.Once
	localLn  net.Listener
	localSrv *http.Server
}

// Start brings a node up: enrollment if it never enrolled, then the tunnel
// with the last verified netmap, then the control stream in the background.
// It returns once the tunnel is up; the node runs until Close or ctx ends.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("node: a state directory is required (--state)")
	}
	n := &Node{log: cfg.Logger, state: stateDir{cfg.StateDir}, cfg: cfg, done: make(chan struct{})}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if err := n.state.ensure(); err != nil {
		return nil, err
	}
	wgKey, err := n.state.wireGuardKey()
	if err != nil {
		return nil, err
	}
	if n.idKey, err = n.state.identityKey(); err != nil {
		return nil, err
	}
	if n.enr, err = n.state.enrolled(); err != nil {
		return nil, err
	}
	switch expired := n.svidExpired(); {
	case n.enr == nil, !expired.IsZero():
		err = n.enroll(ctx, wgKey, expired)
	case cfg.Token != "":
		n.log.Info("already enrolled; ignoring the join token", "node", n.enr.Name)
	}
	if err != nil {
		return nil, err
	}
	if err := n.loadIdentity(); err != nil {
		return nil, err
	}
	if n.audit, err = auditlog.Open(filepath.Join(cfg.StateDir, "audit"), n.log, cfg.AuditFsyncEvery); err != nil {
		return nil, err
	}
	if err := n.startTunnel(wgKey); err != nil {
		n.audit.Close()
		return nil, err
	}
	// The firewall guards the mesh address before the proxy listens on it.
	if err := n.startFirewall(); err != nil {
		n.tun.Close()
		n.audit.Close()
		return nil, err
	}
	if err := n.startProxy(); err != nil {
		n.tun.Close()
		n.removeFirewall()
		n.audit.Close()
		return nil, err
	}
	if err := n.startLocalAPI(); err != nil {
		n.proxy.Close()
		n.tun.Close()
		n.removeFirewall()
		n.audit.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.runControl(runCtx) }()
	go func() { defer n.wg.Done(); n.runRenewal(runCtx) }()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); every(runCtx, expiryCheck, n.expireNetmap) }()
	go func() { defer n.wg.Done(); n.audit.Ship(runCtx, n.client.ShipAudit) }()
	if n.cfg.Firewall != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.runFirewallCheck(runCtx) }()
	}
	if period := n.cfg.ExposureScanEvery; period > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.runExposureScans(runCtx, period) }()
	}
	return n, nil
}

// DefaultHostname turns the host's name into a valid node name.
func DefaultHostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "node"
	}
	h = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	var b strings.Builder
	for _, r := range h {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" {
		return "node"
	}
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// svidExpired returns when the saved SVID expired, or the zero time if it
// has not (or cannot be read, which loadIdentity reports).
func (n *Node) svidExpired() time.Time {
	if n.enr == nil {
		return time.Time{}
	}
	cred, err := n.state.credential(n.idKey)
	if err != nil || len(cred.Certs) == 0 || time.Now().Before(cred.Certs[0].NotAfter) {
		return time.Time{}
	}
	return cred.Certs[0].NotAfter
}

// enroll enrolls the node with the join token. A non-zero expired is when
// the SVID of an enrolled node expired while it was not running (it renews
// only while it runs): it enrolls again, the coordinator knows it by the
// identity key of its last SVID, and it keeps its name, addresses, keys,
// netmap and audit log.
func (n *Node) enroll(ctx context.Context, wgKey tunnel.Key, expired time.Time) error {
	coord, port, name := n.cfg.Coordinator, n.cfg.ListenPort, n.cfg.Hostname
	again := !expired.IsZero()
	if again {
		if n.cfg.Token == "" {
			return fmt.Errorf("node: the SVID of %s expired at %s, while the node was not running; enroll it again with a join token: `mcpmesh up --token TOKEN` (from `mcpmesh token create`), which keeps its name, addresses and audit log",
				n.enr.Name, expired.Local().Format(time.RFC3339))
		}
		if name != "" && name != n.enr.Name {
			return fmt.Errorf("node: %s enrolled as %s; --hostname %s would be another node (give it another --state)", n.state.dir, n.enr.Name, name)
		}
		name, coord = n.enr.Name, cmp.Or(coord, n.enr.Coordinator)
		port = cmp.Or(port, n.enr.ListenPort)
		n.log.Warn("the SVID expired while the node was not running; enrolling again with the join token", "node", name)
	}
	if n.cfg.Token == "" || coord == "" {
		return fmt.Errorf("node: %s holds no enrollment; pass --coordinator URL and --token TOKEN (from `mcpmesh token create`)", n.state.dir)
	}
	// The port is chosen now so the join already tells peers where this
	// node listens: a peer that learns of us can start the handshake
	// itself instead of dropping ours and waiting out WireGuard's 5 s retry.
	if port == 0 {
		var err error
		if port, err = freeUDPPort(); err != nil {
			return err
		}
	}
	tok, err := identity.ParseToken(n.cfg.Token)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if name == "" {
		name = DefaultHostname()
	}
	if err := identity.ValidateNodeName(name); err != nil {
		return fmt.Errorf("node: --hostname: %w", err)
	}
	// The CSR is for the trust domain the token's CA will confirm; the CA
	// refuses it unless the ID is exactly the node's, so the domain is
	// learnt from the bootstrap handshake's answer below.
	pub, err := publicKey(wgKey)
	if err != nil {
		return err
	}
	csrFor := func(td spiffeid.TrustDomain) ([]byte, spiffeid.ID, error) {
		id, err := identity.NodeID(td, name)
		if err != nil {
			return nil, id, err
		}
		csr, err := identity.NewCSR(n.idKey, id)
		return csr, id, err
	}
	td, err := controlclient.TrustDomainOf(ctx, coord, tok)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	csr, id, err := csrFor(td)
	if err != nil {
		return err
	}
	resp, err := controlclient.Enroll(ctx, coord, tok, api.EnrollRequest{
		Hostname:     name,
		WireGuardKey: pub.String(),
		CSR:          csr,
		Endpoint:     api.EndpointInfo{ListenPort: port, Advertise: n.cfg.Advertise},
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := n.state.saveSVID(resp.SVID, resp.Bundle); err != nil {
		return err
	}
	// A node enrolling again with the coordinator it knew keeps the map it
	// has; pointed at another coordinator it starts afresh.
	same := again && n.enr.ID == id.String() && bytes.Equal(n.enr.NetmapKey, resp.NetmapKey)
	n.enr = &enrolled{Name: name, ID: id.String(), Coordinator: coord, NetmapKey: resp.NetmapKey, ListenPort: port}
	if err := n.state.saveEnrolled(n.enr); err != nil {
		return err
	}
	if !same {
		// The enrollment's own record seeds the netmap (version 0: any map
		// from the coordinator supersedes it) so the tunnel has its
		// addresses.
		if err := n.state.saveNetmap(&controlclient.Netmap{Self: resp.Node, Peers: map[string]api.Peer{}}); err != nil {
			return err
		}
	}
	n.log.Info("enrolled", "node", name, "id", id, "addresses", resp.Node.Addresses, "again", again)
	return nil
}

func (n *Node) loadIdentity() error {
	cred, err := n.state.credential(n.idKey)
	if err != nil {
		return err
	}
	id, err := cred.ID()
	if err != nil {
		return err
	}
	if id.String() != n.enr.ID {
		return fmt.Errorf("node: SVID is for %s but the node enrolled as %s", id, n.enr.ID)
	}
	n.td = id.TrustDomain()
	svid, err := cred.SVID()
	if err != nil {
		return err
	}
	n.svid = identity.NewRotatingSVID(svid)
	n.mu.svidExpires, n.mu.svidReceived = cred.Certs[0].NotAfter, time.Now()
	bundle := x509bundle.FromX509Authorities(n.td, cred.Roots)
	n.client, err = controlclient.New(controlclient.Config{
		URL:       n.enr.Coordinator,
		Node:      n.enr.Name,
		SVID:      n.svid,
		Bundle:    bundle,
		NetmapKey: ed25519.PublicKey(n.enr.NetmapKey),
		Logger:    n.log,
	})
	return err
}

func (n *Node) startTunnel(wgKey tunnel.Key) error {
	nm, err := n.state.netmap()
	if err != nil {
		return err
	}
	if nm == nil || len(nm.Self.Addresses) == 0 {
		return fmt.Errorf("node: %s has no netmap with this node's addresses; remove the state directory and enroll again", n.state.dir)
	}
	newTun := n.cfg.NewTunnel
	if newTun == nil {
		newTun = func(c tunnel.Config, log *slog.Logger) (tunnel.Tunnel, error) {
			return netstack.New(c, netstack.WithLogger(log))
		}
	}
	port := n.cfg.ListenPort
	if port == 0 {
		port = n.enr.ListenPort
	}
	tc := tunnel.Config{PrivateKey: wgKey, Addresses: nm.Self.Addresses, ListenPort: port}
	n.tun, err = newTun(tc, n.log)
	if err != nil && n.cfg.ListenPort == 0 && port != 0 {
		// The remembered port is taken; any port works, the coordinator
		// is told on connect.
		n.log.Warn("WireGuard port taken; using another", "port", port, "err", err)
		tc.ListenPort = 0
		n.tun, err = newTun(tc, n.log)
	}
	if err != nil {
		return fmt.Errorf("node: tunnel: %w", err)
	}
	// DESIGN rule 5: the last verified map keeps the mesh up while the
	// coordinator is away, until it expires.
	if nm.Version > 0 && time.Now().After(nm.Expires) {
		n.log.Warn("the saved netmap has expired; waiting for the coordinator", "expired", nm.Expires)
		nm = &controlclient.Netmap{Self: nm.Self, Peers: map[string]api.Peer{}}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.installLocked(nm)
}

// installLocked makes nm the map held and, unless it has expired, the map
// in force: the tunnel gets exactly its peers and the proxy its policy. An
// expired map leaves no peer and no policy (fail closed) until a message
// from the coordinator renews it.
func (n *Node) installLocked(nm *controlclient.Netmap) error {
	held := nm
	if netmapExpired(nm, time.Now()) {
		nm = &controlclient.Netmap{Version: nm.Version, Expires: nm.Expires, Self: nm.Self}
	}
	peers := make([]tunnel.Peer, 0, len(nm.Peers))
	byKey := make(map[tunnel.Key]api.Peer, len(nm.Peers))
	for _, p := range nm.SortedPeers() {
		k, err := tunnel.ParseKey(p.WireGuardKey)
		if err != nil {
			return fmt.Errorf("node: peer %s: %w", p.Name, err)
		}
		tp := tunnel.Peer{PublicKey: k, Endpoint: p.Endpoint, PersistentKeepalive: keepalive}
		for _, a := range p.Addresses {
			tp.AllowedIPs = append(tp.AllowedIPs, netip.PrefixFrom(a, a.BitLen()))
		}
		peers = append(peers, tp)
		byKey[k] = p
	}
	if _, err := n.tun.SetPeers(peers); err != nil {
		return fmt.Errorf("node: apply netmap v%d: %w", nm.Version, err)
	}
	n.mu.held, n.mu.netmap = held, nm
	n.mu.byKey = byKey
	if n.mu.expiry != nil {
		n.mu.expiry.Stop()
		n.mu.expiry = nil
	}
	if nm != held {
		n.mu.policy, n.mu.bundle = nil, nil
		return nil
	}
	n.compilePolicyLocked(nm.Policy)
	if !nm.Expires.IsZero() {
		n.mu.expiry = time.AfterFunc(time.Until(nm.Expires), n.expireNetmap)
	}
	return nil
}

// netmapExpired reports whether nm is past its expiry at now. A map
// without one (the empty view a node starts from) does not expire.
func netmapExpired(nm *controlclient.Netmap, now time.Time) bool {
	return !nm.Expires.IsZero() && !now.Before(nm.Expires)
}

// expiredErrLocked says why nothing on the mesh is reachable when the
// held netmap has expired, and is nil otherwise.
func (n *Node) expiredErrLocked() error {
	if n.mu.netmap == n.mu.held {
		return nil
	}
	return fmt.Errorf("this node's netmap expired at %s without word from the coordinator, so it has no peers until it reaches the coordinator again (see `mcpmesh status`)",
		n.mu.held.Expires.Local().Format(time.RFC3339))
}

// expireNetmap takes the held map out of force when it expires with no
// word from the coordinator: a node cut off for longer than the netmap's
// lifetime cannot know whether its peers were revoked or its policy
// changed, so it stops trusting both.
//
// Timers count the time the machine is awake, and the expiry is a time of
// day: a laptop asleep past it must not wake up trusting its map for the
// rest of the timer. So the expiry is also checked on the wall clock where
// the map is used (enforceExpiryLocked) and every expiryCheck.
func (n *Node) expireNetmap() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.enforceExpiryLocked()
}

// expiryCheck is how often a running node looks at the wall clock for
// its netmap's expiry.
const expiryCheck = 30 * time.Second

// enforceExpiryLocked takes the held map out of force if the wall clock
// has passed its expiry.
func (n *Node) enforceExpiryLocked() {
	held := n.mu.held
	if n.mu.closed || held == nil || n.mu.netmap != held || !netmapExpired(held, time.Now()) {
		return // closed, out of force already, or not expired
	}
	n.log.Error("the netmap expired without word from the coordinator; every peer is dropped and every call denied until it is reached",
		"version", held.Version, "expired", held.Expires)
	if err := n.installLocked(held); err != nil {
		n.log.Error("dropping the expired netmap's peers", "err", err)
	}
}

// compilePolicyLocked compiles the rules the coordinator sent for this
// node's services. A bundle that does not compile leaves no policy, and so
// every call denied: fail closed.
func (n *Node) compilePolicyLocked(b *api.PolicyBundle) {
	if b == nil || b == n.mu.bundle {
		return
	}
	n.mu.bundle = b
	n.mu.policy = nil
	if len(b.Document) == 0 {
		return
	}
	pol, err := policy.Parse(fmt.Sprintf("policy-v%d", b.Version), b.Document)
	if err != nil {
		n.log.Error("policy from the coordinator does not compile; denying every call", "version", b.Version, "err", err)
		return
	}
	n.mu.policy = pol
}

// Policy returns the compiled rules for the services this node hosts and
// the policy version they were cut from; nil means deny everything.
func (n *Node) Policy() (*policy.Policy, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.enforceExpiryLocked()
	var v uint64
	if n.mu.bundle != nil {
		v = n.mu.bundle.Version
	}
	return n.mu.policy, v
}

// SetServices publishes the whole set of services this node serves. It is
// sent again on every reconnection, so a coordinator that lost it (or was
// down) learns it back.
// A set the coordinator refuses (a name another node holds, a tag this
// node may not use) is not kept: the next reconnection sends the last set
// it took.
func (n *Node) SetServices(ctx context.Context, svcs []api.ServiceSpec) error {
	err := n.client.SetServices(ctx, svcs)
	if refused(err) {
		return err
	}
	n.mu.Lock()
	n.mu.services = slices.Clone(svcs)
	if err == nil {
		n.mu.servicesErr = nil
	}
	n.mu.Unlock()
	return err
}

// netmapHandler adapts the node to controlclient.Handler.
type netmapHandler struct{ n *Node }

func (h netmapHandler) Version() uint64 {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	return h.n.mu.held.Version
}

func (h netmapHandler) Apply(m *api.NetmapMessage) error {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	next, err := n.mu.held.Apply(n.enr.Name, m)
	if err != nil {
		return err
	}
	if err := n.state.saveNetmap(next); err != nil {
		return err
	}
	if err := n.installLocked(next); err != nil {
		return err
	}
	n.mu.connected, n.mu.controlErr = true, nil
	n.log.Debug("netmap applied", "version", next.Version, "full", m.Full, "peers", len(next.Peers))
	return nil
}

func (h netmapHandler) Connected(ctx context.Context) error {
	n := h.n
	n.mu.Lock()
	n.mu.connected = false
	svcs := n.mu.services
	n.mu.Unlock()
	if err := n.client.SetEndpoint(ctx, api.EndpointInfo{ListenPort: n.tun.ListenPort(), Advertise: n.cfg.Advertise}); err != nil {
		return err
	}
	if svcs != nil {
		err := n.client.SetServices(ctx, svcs)
		n.mu.Lock()
		n.mu.servicesErr = nil
		if refused(err) {
			n.mu.servicesErr = err
		}
		n.mu.Unlock()
		if refused(err) {
			// Refused for good (a name taken meanwhile, say): the node's
			// services are not published, but its netmap stream must not
			// wait on them, or the node would stop hearing of revocations.
			n.log.Error("the coordinator refused this node's services; they are not published", "err", err)
			return nil
		}
		return err
	}
	return nil
}

func (n *Node) runControl(ctx context.Context) {
	err := n.client.Run(ctx, netmapHandler{n})
	if ctx.Err() != nil {
		return
	}
	n.mu.Lock()
	n.mu.connected, n.mu.controlErr = false, err
	n.mu.Unlock()
	n.log.Error("coordinator refused this node; the mesh stays as last seen until the netmap expires", "err", err)
}

// runRenewal renews the SVID at half its remaining lifetime (counted from
// when the node got it, since the CA backdates NotBefore), retrying with
// backoff. The tunnel does not depend on the SVID, so renewal never drops
// traffic.
func (n *Node) runRenewal(ctx context.Context) {
	retry := time.Second
	for {
		n.mu.Lock()
		at := n.mu.svidReceived.Add(n.mu.svidExpires.Sub(n.mu.svidReceived) / 2)
		n.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		for {
			err := n.renew(ctx)
			if err == nil {
				retry = time.Second
				break
			}
			var se *api.StatusError
			if errors.As(err, &se) && se.Permanent() {
				n.log.Error("SVID renewal refused", "err", err)
				return
			}
			n.mu.Lock()
			expires := n.mu.svidExpires
			n.mu.Unlock()
			if !time.Now().Before(expires) {
				// The coordinator no longer accepts it, and waiting will
				// not change that (the host slept, or the coordinator was
				// away, for longer than the SVID lives).
				err := fmt.Errorf("the SVID expired at %s before it could be renewed (last error: %v); restart the node with a join token to enroll it again: `mcpmesh up --token TOKEN`", expires.Local().Format(time.RFC3339), err)
				n.mu.Lock()
				n.mu.connected, n.mu.controlErr = false, err
				n.mu.Unlock()
				n.log.Error("SVID expired", "err", err)
				return
			}
			n.log.Warn("SVID renewal failed; retrying", "err", err, "in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(retry*2, time.Minute)
		}
	}
}

func (n *Node) renew(ctx context.Context) error {
	id, err := spiffeid.FromString(n.enr.ID)
	if err != nil {
		return err
	}
	csr, err := identity.NewCSR(n.idKey, id)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := n.client.Renew(rctx, csr)
	if err != nil {
		return err
	}
	certs, err := identity.ParseCertsPEM(resp.SVID)
	if err != nil {
		return fmt.Errorf("node: renewed SVID: %w", err)
	}
	roots, err := identity.ParseCertsPEM(resp.Bundle)
	if err != nil {
		return fmt.Errorf("node: renewed bundle: %w", err)
	}
	cred := &identity.Credential{Certs: certs, Key: n.idKey, Roots: roots}
	got, err := identity.VerifySVID(certs, cred.TrustBundle(n.td))
	if err != nil || got != id {
		return fmt.Errorf("node: renewed SVID does not verify as %s: %v", id, err)
	}
	svid, err := cred.SVID()
	if err != nil {
		return err
	}
	if err := n.state.saveSVID(resp.SVID, resp.Bundle); err != nil {
		return err
	}
	n.svid.Set(svid)
	n.client.SVIDRenewed()
	n.mu.Lock()
	n.mu.svidExpires, n.mu.svidReceived = certs[0].NotAfter, time.Now()
	n.mu.Unlock()
	n.log.Info("SVID renewed", "expires", certs[0].NotAfter)
	return nil
}

func (n *Node) startLocalAPI() error {
	path := n.cfg.SocketPath
	if path == "-" {
		return nil
	}
	if path == "" {
		path = filepath.Join(n.state.dir, SocketName)
	}
	ln, err := localapi.Listen(path)
	if err != nil {
		return err
	}
	n.localLn = ln
	n.localSrv = &http.Server{Handler: localapi.Handler(n, n.log), ReadHeaderTimeout: 5 * time.Second}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.localSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("LocalAPI", "err", err)
		}
	}()
	return nil
}

// RecordAudit appends one decision of this node's MCP proxy to the audit
// log; it is on disk before this returns and shipped to the coordinator.
func (n *Node) RecordAudit(ev api.AuditEvent) error {
	ev.Node = n.enr.Name
	return n.audit.Record(ev)
}

// appendAudit is the proxy's audit hook: the event goes into the file at
// once; with AuditFsyncEvery zero, the returned function holds the answer
// until the event is on disk.
func (n *Node) appendAudit(evs []api.AuditEvent) (func() error, error) {
	for i := range evs {
		evs[i].Node = n.enr.Name
	}
	seq, err := n.audit.Append(evs...)
	if err != nil {
		return nil, err
	}
	if n.cfg.AuditFsyncEvery > 0 {
		return nil, nil
	}
	return func() error { return n.audit.Sync(seq) }, nil
}

// MCPForwarder implements localapi.Backend.
func (n *Node) MCPForwarder() http.Handler { return n.mcpForwarder() }

// Name is the node's name.
func (n *Node) Name() string { return n.enr.Name }

// ID is the node's SPIFFE ID.
func (n *Node) ID() string { return n.enr.ID }

// Tunnel is the node's data plane, for services that listen on the mesh.
func (n *Node) Tunnel() tunnel.Tunnel { return n.tun }

// Addresses are the node's mesh addresses.
func (n *Node) Addresses() []netip.Addr { return n.tun.Addresses() }

// WhoIs maps a mesh source address to the peer that owns it under the
// current netmap (DESIGN rule 2: identity comes from the tunnel).
func (n *Node) WhoIs(addr netip.Addr) (api.Peer, error) {
	k, err := n.tun.WhoIs(addr.Unmap())
	if err != nil {
		return api.Peer{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.enforceExpiryLocked()
	p, ok := n.mu.byKey[k]
	if !ok {
		return api.Peer{}, tunnel.ErrNoPeer
	}
	return p, nil
}

// Netmap returns a copy of the current netmap.
func (n *Node) Netmap() *controlclient.Netmap {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.netmap.Clone()
}

// Done is closed when the node has stopped (Close, or Down over LocalAPI).
func (n *Node) Done() <-chan struct{} { return n.done }

// Down stops the node; it implements localapi.Backend.
func (n *Node) Down() { _ = n.Close() }

// Close stops the node and releases its tunnel and socket. It is idempotent.
func (n *Node) Close() error {
	var err error
	n.downOnce.Do(func() {
		n.mu.Lock()
		n.mu.closed = true
		if n.mu.expiry != nil {
			n.mu.expiry.Stop()
		}
		n.mu.Unlock()
		n.cancel()
		if n.localSrv != nil {
			// Let answers in flight (such as the one to `down`) finish.
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if n.localSrv.Shutdown(sctx) != nil {
				n.localSrv.Close()
			}
			cancel()
		}
		n.proxy.Close()
		n.stopAllStdio()
		err = n.tun.Close()
		n.wg.Wait()
		n.removeFirewall()
		n.client.Close()
		n.audit.Close()
		close(n.done)
	})
	return err
}
