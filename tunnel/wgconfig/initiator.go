package wgconfig

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/mcpmesh/mcpmesh/tunnel"
)

// Who starts the first handshake.
//
// Enabling a persistent keepalive makes wireguard-go send a handshake
// initiation at once. When both sides of a new pair do so within the same
// millisecond (they learn of each other from the same netmap change), the
// initiations cross: each side answers the other's and drops its own
// response, and neither has a session until WireGuard retries 5 s later.
// When one side adds the other well before, its initiation is dropped as
// coming from an unknown key, with the same 5 s cost.
//
// So the side with the lower public key enables the keepalive (and so
// initiates) at once, and the other side enables it after deferDelay with
// jitter: by then it has usually answered the first side's initiation, and
// if that was dropped because it arrived early, its own initiation now
// finds the first side ready.
const (
	deferDelay  = 200 * time.Millisecond
	deferJitter = 100 * time.Millisecond
)

// defersFirstHandshake reports whether this side waits before initiating
// to peer.
func (ps *Peers) defersFirstHandshake(peer tunnel.Key) bool {
	return compareKey(ps.pub, peer) > 0
}

// scheduleKeepaliveLocked enables peer's keepalive after the deferral. The
// caller holds ps.state and has just added peer with its keepalive off.
func (ps *Peers) scheduleKeepaliveLocked(peer tunnel.Peer) {
	ps.cancelKeepaliveLocked(peer.PublicKey)
	var tm *time.Timer
	tm = time.AfterFunc(deferDelay+rand.N(deferJitter), func() {
		ps.state.Lock()
		defer ps.state.Unlock()
		if ps.state.closed || ps.state.deferred[peer.PublicKey] != tm {
			return // closed, removed, or rescheduled meanwhile
		}
		delete(ps.state.deferred, peer.PublicKey)
		cur, ok := ps.state.peers[peer.PublicKey]
		if !ok || cur.PersistentKeepalive == 0 {
			return
		}
		uapi := fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=%d\n",
			peer.PublicKey.Hex(), keepaliveSeconds(cur.PersistentKeepalive))
		if err := ps.dev.IpcSet(uapi); err != nil {
			ps.log.Warn("wgconfig: enable keepalive", "peer", peer.PublicKey.String(), "err", err)
		}
	})
	ps.state.deferred[peer.PublicKey] = tm
}

// cancelKeepaliveLocked forgets a pending deferred keepalive.
func (ps *Peers) cancelKeepaliveLocked(k tunnel.Key) {
	if tm, ok := ps.state.deferred[k]; ok {
		tm.Stop()
		delete(ps.state.deferred, k)
	}
}
