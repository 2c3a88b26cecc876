package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"slices"
	"strconv"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/identity"
	"github.com/mcpmesh/mcpmesh/mcp"
	"github.com/mcpmesh/mcpmesh/mcp/stdioserve"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/platform"
)

// MCPPort is the TCP port of every node's MCP proxy on its mesh addresses.
// It is the same everywhere so a caller needs only the serving node's name.
const MCPPort = 7811

const fileServices = "services.json"

// startProxy runs the MCP proxy on the mesh address and re-serves the
// services saved in the state directory.
func (n *Node) startProxy() error {
	n.mu.Lock()
	n.mu.upstreamOwner, n.mu.upstreamPin, n.mu.pinUID = map[uint16]int{}, map[uint16]int{}, map[string]int{}
	if n.ownerOf == nil {
		n.ownerOf = platform.LocalListenerOwner
	}
	n.mu.Unlock()
	key, err := n.state.digestKey()
	if err != nil {
		return err
	}
	n.proxy = mcp.New(mcp.Config{
		Node:      n.enr.Name,
		DigestKey: key,
		WhoIs: func(addr netip.Addr) (mcp.Caller, error) {
			p, err := n.WhoIs(addr)
			if err != nil {
				return mcp.Caller{}, err
			}
			return mcp.Caller{Name: p.Name, ID: p.ID, Tags: p.Tags}, nil
		},
		Policy:        n.Policy,
		Audit:         n.appendAudit,
		Logger:        n.log.With("c", "mcp"),
		CheckUpstream: n.checkUpstreamOwner,
	})
	ln, err := n.tun.ListenTCP(MCPPort)
	if err != nil {
		return fmt.Errorf("node: MCP proxy: %w", err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.proxy.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.log.Error("MCP proxy stopped", "err", err)
		}
	}()
	saved, err := n.loadServices()
	if err != nil {
		return err
	}
	for _, s := range saved {
		url, err := n.upstreamURL(s)
		if err == nil {
			err = n.proxy.SetService(n.proxyService(s, url))
		}
		if err != nil {
			n.log.Error("saved service not served", "service", s.Name, "err", err)
			continue
		}
		n.mu.served = append(n.mu.served, s)
		n.mu.services = append(n.mu.services, api.ServiceSpec{Name: s.Name, Tags: s.Tags})
	}
	return nil
}

// proxyService is how the proxy serves req at url. A stdio upstream answers
// only with its credential, and runs a process per session,
// stdioserve.MaxSessions at most, so one caller gets an eighth of them: no
// single node on the mesh can take them all.
func (n *Node) proxyService(req localapi.ServeRequest, url string) mcp.Service {
	svc := mcp.Service{Name: req.Name, Tags: req.Tags, URL: url}
	if req.Stdio != "" {
		svc.MaxSessionsPerCaller = stdioserve.MaxSessions / 8
		n.mu.Lock()
		if srv := n.mu.stdio[req.Name]; srv != nil {
			svc.UpstreamHeader = srv.Credential()
		}
		n.mu.Unlock()
	}
	return svc
}

func (n *Node) loadServices() ([]localapi.ServeRequest, error) {
	b, err := os.ReadFile(n.state.path(fileServices))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var out []localapi.ServeRequest
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("node: %s: %w", fileServices, err)
	}
	return out, nil
}

// Serve publishes an MCP service as mesh-only: the proxy serves it on the
// mesh address, the coordinator lists it, and it is saved so a restart
// serves it again. It implements localapi.Backend.
func (n *Node) Serve(ctx context.Context, req localapi.ServeRequest) (*localapi.ServeResult, error) {
	if err := identity.ValidateNodeName(req.Name); err != nil {
		return nil, fmt.Errorf("service name %q: use lowercase letters, digits and '-'", req.Name)
	}
	if (req.Upstream == "") == (req.Stdio == "") {
		return nil, errors.New("an upstream is required: --upstream http://127.0.0.1:PORT/mcp or --stdio \"CMD ARGS\"")
	}
	if req.UpstreamUser != "" {
		if err := n.checkUpstreamUser(req); err != nil {
			return nil, err
		}
	}
	if req.Lockdown {
		if n.cfg.Firewall == nil {
			return nil, errNoFirewall
		}
		if _, err := lockdownPort(req); err != nil {
			return nil, err
		}
	}
	// The firewall changes in step with the served set: hold its lock
	// from the new rules to the new list, so the drift check in between
	// cannot put the old rules back.
	n.fwMu.Lock()
	defer n.fwMu.Unlock()
	next := slices.DeleteFunc(n.servedNow(), func(s localapi.ServeRequest) bool { return s.Name == req.Name })
	next = append(next, req)
	// The coordinator decides first whether the node may publish the
	// service (its name is free, its tags are the node's to use), so a
	// refusal changes nothing here. An unreachable coordinator does not
	// stop the node serving: the set goes again on reconnect.
	published := n.SetServices(ctx, servedSpecs(next))
	if refused(published) || slowDown(published) {
		return nil, fmt.Errorf("the coordinator refused to publish %s: %w", req.Name, published)
	}
	// fail undoes what went before it, so that what is served, what the
	// coordinator lists and what the next reconnection sends stay one set.
	// replaced is set once the service's old upstream (if it had one) has
	// been stopped or swapped for the new one.
	replaced := false
	fail := func(err error) (*localapi.ServeResult, error) {
		if replaced {
			n.restoreService(req.Name)
		}
		if ferr := n.applyFirewall(n.servedNow()); ferr != nil {
			n.log.Error("host firewall not restored", "err", ferr)
		}
		n.mu.Lock()
		n.pinUpstreamsLocked() // the refused request's pin goes
		n.mu.Unlock()
		if perr := n.SetServices(ctx, servedSpecs(n.servedNow())); perr != nil && published == nil {
			n.log.Error("services not withdrawn at the coordinator (they are sent again on reconnect)", "err", perr)
		}
		return nil, err
	}
	// Locking the port down comes before the service is reachable, so it
	// is never served while the shadow port is still open.
	if err := n.applyFirewall(next); err != nil {
		return fail(err)
	}
	replaced = true
	url, err := n.upstreamURL(req)
	if err == nil {
		err = n.proxy.SetService(n.proxyService(req, url))
	}
	if err != nil {
		return fail(err)
	}
	res := &localapi.ServeResult{Name: req.Name, Endpoint: fmt.Sprintf("http://%s/svc/%s/mcp", net.JoinHostPort(n.tun.Addresses()[0].String(), strconv.Itoa(MCPPort)), req.Name)}
	if req.Upstream != "" {
		res.Warnings = exposureWarnings(req.Upstream, req.Lockdown)
		if _, uid, found, err := n.upstreamOwner(req.Upstream); err == nil && found {
			res.UpstreamOwner = describeUID(uid)
		}
	}
	n.mu.Lock()
	prev := n.mu.served
	n.mu.served = next
	err = n.saveServicesLocked()
	if err != nil {
		n.mu.served = prev
	}
	n.pinUpstreamsLocked()
	n.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	if published != nil {
		return res, fmt.Errorf("serving %s locally, but the coordinator could not be told (it will be on reconnect): %w", req.Name, published)
	}
	n.log.Info("serving mesh-only service", "service", req.Name, "upstream", req.Upstream, "tags", req.Tags)
	return res, nil
}

// noteUpstreamOwner remembers which local user serves an HTTP upstream's
// port as the node begins to serve it (at serve, and at start for the
// saved services): the user the request names (a pin), or else whoever
// serves it now, unless another service pins the port. A port nobody
// listens on yet, with no user named, is remembered at the first
// connection.
func (n *Node) noteUpstreamOwner(req localapi.ServeRequest) {
	if req.UpstreamUser != "" {
		// A pin names the owner: who holds the port now is not asked.
		port := upstreamPort(req.Upstream)
		if port == 0 {
			return
		}
		pin := n.resolvePin(req)
		n.mu.Lock()
		n.mu.upstreamPin[port], n.mu.pinUID[req.Name] = pin, pin
		n.mu.Unlock()
		return
	}
	port, uid, found, err := n.upstreamOwner(req.Upstream)
	if port == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.mu.upstreamOwner, port)
	if found && err == nil {
		n.mu.upstreamOwner[port] = uid
	}
}

// resolvePin is the uid req's UpstreamUser names, or -1 when it names no
// user: no socket belongs to uid -1, so nothing on the port is connected
// to (fail closed) until the service is served again.
func (n *Node) resolvePin(req localapi.ServeRequest) int {
	uid, err := upstreamUID(req.UpstreamUser)
	if err != nil {
		n.log.Error("the upstream's user is unknown; refusing to connect to its port", "service", req.Name, "err", err)
		return -1
	}
	return uid
}

// pinUpstreamsLocked makes the pins those of the services now served,
// with the uids noteUpstreamOwner resolved (-1, which fails closed, for
// one it did not). The caller holds n.mu.
func (n *Node) pinUpstreamsLocked() {
	clear(n.mu.upstreamPin)
	keep := map[string]int{}
	for _, s := range n.mu.served {
		if s.UpstreamUser == "" {
			continue
		}
		uid, ok := n.mu.pinUID[s.Name]
		if !ok {
			uid = -1
		}
		keep[s.Name] = uid
		if port := upstreamPort(s.Upstream); port != 0 {
			n.mu.upstreamPin[port] = uid
		}
	}
	n.mu.pinUID = keep
}

// checkUpstreamUser refuses to serve an upstream whose port another user
// than the one named already holds, so that the refusal comes at serve
// time, with the names, rather than at the first call; and a pin that
// contradicts another service's on the same port.
func (n *Node) checkUpstreamUser(req localapi.ServeRequest) error {
	if req.Upstream == "" {
		return errors.New("--upstream-user applies to an --upstream server; a --stdio server runs as the node itself")
	}
	want, err := upstreamUID(req.UpstreamUser)
	if err != nil {
		return err
	}
	port := upstreamPort(req.Upstream)
	n.mu.Lock()
	for _, s := range n.mu.served {
		if s.Name == req.Name || s.UpstreamUser == "" || upstreamPort(s.Upstream) != port {
			continue
		}
		if other, ok := n.mu.pinUID[s.Name]; !ok || other != want {
			n.mu.Unlock()
			return fmt.Errorf("service %s pins port %d to user %s; one port has one owner: refused", s.Name, port, s.UpstreamUser)
		}
	}
	n.mu.Unlock()
	_, uid, found, err := n.upstreamOwner(req.Upstream)
	if err != nil {
		return fmt.Errorf("--upstream-user cannot be checked here: %w", err)
	}
	if found && uid != want {
		return fmt.Errorf("%s is served by %s, not by %s as --upstream-user says: refused (another program holds the port)",
			req.Upstream, describeUID(uid), describeUID(want))
	}
	return nil
}

// upstreamUID resolves a ServeRequest's UpstreamUser: a user name, or a
// numeric uid (which needs no entry in the user database, as in many
// containers).
func upstreamUID(name string) (int, error) {
	if uid, err := strconv.Atoi(name); err == nil {
		if uid < 0 {
			return 0, fmt.Errorf("upstream user %q: a uid is not negative", name)
		}
		return uid, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("upstream user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, fmt.Errorf("upstream user %q has uid %q, not a number", name, u.Uid)
	}
	return uid, nil
}

// upstreamOwner is the local user whose socket takes connections to an
// HTTP upstream's URL now, if any does, and the URL's port (0 for a URL
// that does not parse). For "localhost", either loopback address, IPv4
// first.
func (n *Node) upstreamOwner(upstream string) (port uint16, uid int, found bool, err error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return 0, 0, false, fmt.Errorf("upstream %q: %w", upstream, err)
	}
	if port = urlPort(u); port == 0 {
		return 0, 0, false, nil
	}
	addrs := []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		addrs = []netip.Addr{a}
	}
	for _, a := range addrs {
		if uid, found, err = n.ownerOf(netip.AddrPortFrom(a, port)); err != nil || found {
			return port, uid, found, err
		}
	}
	return port, 0, false, nil
}

// upstreamPort is the port an HTTP upstream's URL reaches: its own, or 80
// (as the proxy dials it); 0 for a URL that does not parse.
func upstreamPort(upstream string) uint16 {
	u, err := url.Parse(upstream)
	if err != nil {
		return 0
	}
	return urlPort(u)
}

// urlPort is upstreamPort of a parsed URL: its port, or 80; 0 for one
// that is no port number.
func urlPort(u *url.URL) uint16 {
	p := u.Port()
	if p == "" {
		p = "80"
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(port)
}

// describeUID names a uid for people: "ehr (uid 998)", or "uid 998" when
// the user database has no name for it.
func describeUID(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// checkUpstreamOwner refuses a new connection to an upstream whose port is
// now served by another local user than the one who served it when the
// node began: a user who bound the port while the real server was down
// would otherwise receive the calls the policy allowed, and answer them.
func (n *Node) checkUpstreamOwner(remote string) error {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return nil // not an IP connection: nothing to compare
	}
	port := ap.Port()
	n.mu.Lock()
	want, known := n.wantedOwnerLocked(port)
	served := n.servesPortLocked(port)
	n.mu.Unlock()
	if !known && !served {
		// A service no longer served (its last requests, the DELETEs
		// that end its sessions): its pin is gone, and nothing may be
		// learnt for a port no service uses.
		return fmt.Errorf("no served service uses %s any more; refused", ap)
	}
	uid, found, err := n.ownerOf(ap)
	switch {
	case err != nil && known:
		// Fail closed: the owner cannot be compared.
		n.log.Error("cannot tell who serves an upstream; refusing to connect", "upstream", ap, "err", err)
		return fmt.Errorf("cannot tell who serves %s: %w; refused", ap, err)
	case !found && known:
		// The listener that took the connection is gone already: one
		// that accepted and closed at once, or the server restarting.
		return fmt.Errorf("nothing listens on %s any more to have taken the connection; refused", ap)
	case err != nil || !found:
		return nil // nothing learnt yet, and nothing to learn
	case !known:
		// Learnt now, unless a serve or a connection at the same time
		// set an owner first: then compared with that one.
		n.mu.Lock()
		_, had := n.mu.upstreamOwner[port]
		_, pinned := n.mu.upstreamPin[port]
		bridge := n.bridgesPortLocked(port)
		if !had {
			n.mu.upstreamOwner[port] = uid
		}
		want, _ = n.wantedOwnerLocked(port)
		n.mu.Unlock()
		if !had && !pinned && !bridge && uid == want {
			// Trust on first use of an HTTP upstream: whoever holds the
			// port now is trusted from here on, so say who, once, where
			// an admin looks. (A stdio service's bridge is the node's own
			// listener, and a pin needs no trust.)
			n.log.Warn("an upstream's owner was learnt at its first connection, as nothing listened on it when serving began; pin it with serve --upstream-user",
				"upstream", ap, "owner", describeUID(uid))
		}
	}
	if uid != want {
		n.log.Error("an upstream's port is served by another user than before; refusing to connect", "upstream", ap, "uid", uid, "want_uid", want)
		return fmt.Errorf("%s is now served by %s, not %s as when mcpmesh began serving it; refused (serve the service again to accept its new owner)", ap, describeUID(uid), describeUID(want))
	}
	return nil
}

// wantedOwnerLocked is the user who must serve port: its pin, or else the
// owner learnt for it. The caller holds n.mu.
func (n *Node) wantedOwnerLocked(port uint16) (uid int, known bool) {
	if uid, ok := n.mu.upstreamPin[port]; ok {
		return uid, true
	}
	uid, known = n.mu.upstreamOwner[port]
	return uid, known
}

// servesPortLocked reports whether a served upstream is on port: an HTTP
// one, or the loopback bridge of a stdio one. The caller holds n.mu.
func (n *Node) servesPortLocked(port uint16) bool {
	for _, s := range n.mu.served {
		if s.Upstream != "" && upstreamPort(s.Upstream) == port {
			return true
		}
	}
	return n.bridgesPortLocked(port)
}

// bridgesPortLocked reports whether port is the loopback bridge of a
// stdio service, a listener of the node's own. The caller holds n.mu.
func (n *Node) bridgesPortLocked(port uint16) bool {
	for _, srv := range n.mu.stdio {
		if upstreamPort(srv.URL()) == port {
			return true
		}
	}
	return false
}

// restoreService serves name again as the saved set has it, after a
// failed attempt to replace it; a name the set does not hold is stopped.
func (n *Node) restoreService(name string) {
	i := slices.IndexFunc(n.servedNow(), func(s localapi.ServeRequest) bool { return s.Name == name })
	if i < 0 {
		n.proxy.RemoveService(name)
		n.stopStdio(name)
		return
	}
	old := n.servedNow()[i]
	url, err := n.upstreamURL(old)
	if err == nil {
		err = n.proxy.SetService(n.proxyService(old, url))
	}
	if err != nil {
		n.log.Error("the service could not be served again as it was; serve it again", "service", name, "err", err)
	}
}

// Unserve stops serving a service.
func (n *Node) Unserve(ctx context.Context, name string) error {
	// The same lock as Serve: the set each computes and publishes is
	// never one the other is changing.
	n.fwMu.Lock()
	defer n.fwMu.Unlock()
	n.mu.Lock()
	before := len(n.mu.served)
	n.mu.served = slices.DeleteFunc(n.mu.served, func(s localapi.ServeRequest) bool { return s.Name == name })
	if len(n.mu.served) == before {
		n.mu.Unlock()
		return fmt.Errorf("this node does not serve %q", name)
	}
	specs := servedSpecs(n.mu.served)
	err := n.saveServicesLocked()
	n.mu.Unlock()
	n.proxy.RemoveService(name)
	n.stopStdio(name)
	// Its pin goes only once nothing can dial for it any more.
	n.mu.Lock()
	n.pinUpstreamsLocked()
	n.mu.Unlock()
	if err != nil {
		return err
	}
	// The lockdown is lifted only after the proxy stopped serving the
	// service.
	if err := n.applyFirewall(n.servedNow()); err != nil {
		return err
	}
	return n.SetServices(ctx, specs)
}

// upstreamURL is the service's HTTP upstream, starting the supervisor of a
// stdio server (replacing one already running for the name).
func (n *Node) upstreamURL(req localapi.ServeRequest) (string, error) {
	n.stopStdio(req.Name)
	if req.Stdio == "" {
		n.noteUpstreamOwner(req)
		return req.Upstream, nil
	}
	srv, err := stdioserve.Start(req.Stdio, n.log.With("service", req.Name))
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	if n.mu.stdio == nil {
		n.mu.stdio = map[string]*stdioserve.Server{}
	}
	n.mu.stdio[req.Name] = srv
	n.mu.Unlock()
	return srv.URL(), nil
}

func (n *Node) stopStdio(name string) {
	n.mu.Lock()
	srv := n.mu.stdio[name]
	delete(n.mu.stdio, name)
	n.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// stopAllStdio ends every stdio server process (node shutdown).
func (n *Node) stopAllStdio() {
	n.mu.Lock()
	all := n.mu.stdio
	n.mu.stdio = nil
	n.mu.Unlock()
	for _, srv := range all {
		srv.Close()
	}
}

// servedNow is a copy of the services this node serves.
func (n *Node) servedNow() []localapi.ServeRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.mu.served)
}

// refused reports whether err is the coordinator's answer refusing a
// request (HTTP 4xx), which sending it again would not change, as opposed
// to a coordinator that could not be reached, failed, or asked to slow
// down (429).
func refused(err error) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code/100 == 4 && se.Code != http.StatusTooManyRequests
}

// slowDown reports whether err is the coordinator asking this node to
// make its changes less often (HTTP 429).
func slowDown(err error) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusTooManyRequests
}

func servedSpecs(served []localapi.ServeRequest) []api.ServiceSpec {
	out := []api.ServiceSpec{}
	for _, s := range served {
		out = append(out, api.ServiceSpec{Name: s.Name, Tags: s.Tags})
	}
	return out
}

func (n *Node) saveServicesLocked() error {
	b, err := json.MarshalIndent(n.mu.served, "", "  ")
	if err != nil {
		return fmt.Errorf("node: encode services: %w", err)
	}
	return identity.WriteFileAtomic(n.state.path(fileServices), append(b, '\n'), 0o600)
}

// exposureWarnings says when the upstream's port also accepts connections
// on a non-loopback address of this host: then the mesh is not the only
// way in, and the operator should bind the server to 127.0.0.1.
func exposureWarnings(upstream string, lockdown bool) []string {
	u, err := url.Parse(upstream)
	if err != nil || u.Port() == "" {
		return nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var warn []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() {
			continue
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ipn.IP.String(), u.Port()), 300*time.Millisecond)
		if err == nil {
			c.Close()
			if lockdown {
				warn = append(warn, fmt.Sprintf("port %s also listens on %s; --lockdown drops packets to it from every interface but loopback", u.Port(), ipn.IP))
			} else {
				warn = append(warn, fmt.Sprintf("port %s also accepts connections on %s: the server is reachable off the mesh; bind it to 127.0.0.1, or serve it with --lockdown", u.Port(), ipn.IP))
			}
		}
	}
	return warn
}

// mcpForwarder carries a local client's Streamable HTTP request to the
// node serving the service, over the mesh. The serving node decides; this
// side only finds the way and says clearly when there is none.
func (n *Node) mcpForwarder() http.Handler {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return n.tun.DialContext(ctx, "tcp", addr)
		},
		ResponseHeaderTimeout: 0,
		IdleConnTimeout:       90 * time.Second,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("service")
		n.mu.Lock()
		n.enforceExpiryLocked()
		if err := n.expiredErrLocked(); err != nil {
			n.mu.Unlock()
			jsonRPCError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		var host *api.Peer
		found := false
		for _, s := range n.mu.netmap.Catalog {
			if s.Name == name {
				found = true
				if p, ok := n.mu.netmap.Peers[s.Node]; ok {
					host = &p
				}
			}
		}
		n.mu.Unlock()
		switch {
		case !found:
			jsonRPCError(w, http.StatusNotFound, fmt.Sprintf("service %q is not available to this node: it does not exist, or no grant lets %s call it (see `mcpmesh services list`)", name, n.enr.Name))
			return
		case host == nil || len(host.Addresses) == 0:
			jsonRPCError(w, http.StatusBadGateway, fmt.Sprintf("the node serving %q is not in this node's netmap", name))
			return
		}
		target := &url.URL{Scheme: "http", Host: net.JoinHostPort(host.Addresses[0].String(), strconv.Itoa(MCPPort)), Path: "/svc/" + name + "/mcp"}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.URL.Path, pr.Out.URL.RawPath = target.Scheme, target.Host, target.Path, ""
				pr.Out.Host = target.Host
				// A local web client's Origin was checked by the bridge;
				// the serving proxy refuses any, so it stops here.
				pr.Out.Header.Del("Origin")
			},
			Transport:     tr,
			FlushInterval: -1,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				jsonRPCError(w, http.StatusBadGateway, fmt.Sprintf("node %s serving %q is unreachable over the mesh: %v", host.Name, name, err))
			},
		}
		rp.ServeHTTP(w, r)
	})
}

// jsonRPCError answers with a JSON-RPC error an MCP client can show.
func jsonRPCError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": nil, "error": map[string]any{"code": -32001, "message": msg}})
}
