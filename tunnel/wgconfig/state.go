package wgconfig

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Peers owns the peer configuration of one WireGuard device: the desired
// state last applied, the WhoIs table built from it, and the timers of
// deferred first handshakes. It is safe for concurrent use. It does not own
// the device: Close stops its timers, and the caller closes the device
// afterwards.
type Peers struct {
	// Immutable after NewPeers.
	dev Device
	pub tunnel.Key // this node's public key, for handshake tie-breaks
	log *slog.Logger

	// whois is rebuilt under state's lock and read without any lock, because
	// WhoIs runs on every accepted connection.
	whois atomic.Pointer[prefixTable]

	state struct {
		sync.Mutex
		closed bool
		// peers is the desired state last applied to the device, with
		// allowed IPs masked and sorted.
		peers map[tunnel.Key]tunnel.Peer
		// dirty is set when an IpcSet failed part way, so the device may
		// differ from peers; the next Set resynchronises from IpcGet.
		dirty bool
		// deferred holds the timers that will enable a new peer's
		// keepalive (see initiator.go).
		deferred map[tunnel.Key]*time.Timer
	}
}

// NewPeers manages the peers of dev, a device already brought up with the
// private key whose public half is pub. It starts with no peers. log may be
// nil.
func NewPeers(dev Device, pub tunnel.Key, log *slog.Logger) *Peers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ps := &Peers{dev: dev, pub: pub, log: log}
	ps.state.peers = map[tunnel.Key]tunnel.Peer{}
	ps.state.deferred = map[tunnel.Key]*time.Timer{}
	ps.whois.Store(newPrefixTable(nil))
	return ps
}

// Close stops every pending deferred keepalive; later calls to Set and
// Status fail with net.ErrClosed. Call it before closing the device. It is
// idempotent.
func (ps *Peers) Close() {
	ps.state.Lock()
	defer ps.state.Unlock()
	if ps.state.closed {
		return
	}
	ps.state.closed = true
	for k := range ps.state.deferred {
		ps.cancelKeepaliveLocked(k)
	}
}

// errClosed is returned by operations after Close.
func errClosed(op string) error {
	return fmt.Errorf("wgconfig: %s: %w", op, net.ErrClosed)
}
