//go:build !linux

package platform

// Firewall is unavailable outside Linux: every method fails with
// errors.ErrUnsupported, and the node runs without host rules (userspace
// mode puts no mesh address on the host to protect).
type Firewall struct{}

// FirewallOption configures a Firewall.
type FirewallOption func(*Firewall)

// NewFirewall returns a Firewall whose every method fails.
func NewFirewall(opts ...FirewallOption) *Firewall { return &Firewall{} }

// Apply fails: there is no host firewall support on this system.
func (f *Firewall) Apply(r FirewallRules) error { return unsupported("install firewall rules") }

// Check fails: there is no host firewall support on this system.
func (f *Firewall) Check(r FirewallRules) error { return unsupported("check firewall rules") }

// Dropped fails: there is no host firewall support on this system.
func (f *Firewall) Dropped() (map[string]uint64, error) {
	return nil, unsupported("read firewall counters")
}

// Remove fails: there is no host firewall support on this system.
func (f *Firewall) Remove() error { return unsupported("remove firewall rules") }
