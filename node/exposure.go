package node

import (
	"context"
	"slices"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/localapi"
	"github.com/mcpmesh/mcpmesh/platform"
)

// ScanExposure implements localapi.Backend: it scans this host for MCP
// servers reachable off the mesh and sends the report to the coordinator.
// A report the coordinator did not take is still returned, with the reason.
func (n *Node) ScanExposure(ctx context.Context) (*localapi.ExposureResult, error) {
	rep := n.scanExposure(ctx)
	res := &localapi.ExposureResult{Report: rep}
	if err := n.client.ReportExposure(ctx, rep); err != nil {
		res.ReportError = err.Error()
	}
	return res, nil
}

// scanExposure finds the listeners that answer MCP on a non-loopback
// address and says, for each, which service serves it through the mesh and
// whether its port is locked down. A lockdown counts only when the node has
// just checked that its firewall holds the rule.
func (n *Node) scanExposure(ctx context.Context) api.ExposureReport {
	own := n.tun.Addresses()
	found, err := platform.ScanExposure(ctx, platform.ScanOptions{
		Logger: n.log,
		// The node's own proxy on its mesh addresses is reachable only
		// through WireGuard; it is not what this audit looks for.
		Listeners: func() ([]platform.Listener, error) {
			ls, err := platform.ListListeners()
			return slices.DeleteFunc(ls, func(l platform.Listener) bool {
				return slices.Contains(own, l.Addr.Addr().Unmap())
			}), err
		},
	})
	rep := api.ExposureReport{ScannedAt: time.Now().UTC(), Findings: []api.ExposureFinding{}}
	if err != nil {
		rep.Error = err.Error()
	}
	served := n.servedNow()
	firewallOK := n.cfg.Firewall != nil && n.FirewallOK() == nil
	for _, e := range found {
		f := api.ExposureFinding{
			Address:         e.Listener.Addr.String(),
			PID:             e.Listener.PID,
			Process:         e.Listener.Process,
			Transport:       e.MCP.Transport,
			URL:             e.MCP.URL,
			ServerName:      e.MCP.ServerName,
			ServerVersion:   e.MCP.ServerVersion,
			ProtocolVersion: e.MCP.ProtocolVersion,
		}
		// The served upstream is on loopback; the exposed socket is the
		// same server when it has the same port.
		for _, s := range served {
			if port, err := lockdownPort(s); err == nil && s.Upstream != "" && port == e.Listener.Addr.Port() {
				f.Service = s.Name
				f.LockedDown = s.Lockdown && firewallOK
			}
		}
		rep.Findings = append(rep.Findings, f)
		if len(rep.Findings) == api.MaxExposureFindings {
			break
		}
	}
	return rep
}

// runExposureScans reports an exposure scan every interval until ctx ends,
// the first one interval after start, so `audit exposure --all` stays
// current without anyone running the command on each host.
func (n *Node) runExposureScans(ctx context.Context, period time.Duration) {
	every(ctx, period, func() {
		res, _ := n.ScanExposure(ctx)
		exposed := 0
		for _, f := range res.Report.Findings {
			if f.Exposed() {
				exposed++
			}
		}
		if exposed > 0 {
			n.log.Warn("MCP servers on this host are reachable off the mesh; see `mcpmesh audit exposure`", "exposed", exposed)
		}
		if res.ReportError != "" {
			n.log.Warn("exposure report not sent", "err", res.ReportError)
		}
	})
}
