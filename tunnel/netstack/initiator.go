package netstack

import (
	"crypto/ecdh"
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

// publicKeyOf derives the Curve25519 public key of a WireGuard private key.
func publicKeyOf(priv tunnel.Key) (tunnel.Key, error) {
	var pub tunnel.Key
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return pub, fmt.Errorf("netstack: private key: %w", err)
	}
	copy(pub[:], k.PublicKey().Bytes())
	return pub, nil
}

// defersFirstHandshake reports whether this side waits before initiating
// to peer.
func (t *Tunnel) defersFirstHandshake(peer tunnel.Key) bool {
	return compareKey(t.pub, peer) > 0
}

// scheduleKeepaliveLocked enables p's keepalive after the deferral. The
// caller holds t.state and has just added p with its keepalive off.
func (t *Tunnel) scheduleKeepaliveLocked(p tunnel.Peer) {
	t.cancelKeepaliveLocked(p.PublicKey)
	var tm *time.Timer
	tm = time.AfterFunc(deferDelay+rand.N(deferJitter), func() {
		t.state.Lock()
		defer t.state.Unlock()
		if t.state.closed || t.state.deferred[p.PublicKey] != tm {
			return // closed, removed, or rescheduled meanwhile
		}
		delete(t.state.deferred, p.PublicKey)
		cur, ok := t.state.peers[p.PublicKey]
		if !ok || cur.PersistentKeepalive == 0 {
			return
		}
		uapi := fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=%d\n",
			p.PublicKey.Hex(), keepaliveSeconds(cur.PersistentKeepalive))
		if err := t.dev.IpcSet(uapi); err != nil {
			t.log.Warn("netstack: enable keepalive", "peer", p.PublicKey.String(), "err", err)
		}
	})
	t.state.deferred[p.PublicKey] = tm
}

// cancelKeepaliveLocked forgets a pending deferred keepalive.
func (t *Tunnel) cancelKeepaliveLocked(k tunnel.Key) {
	if tm, ok := t.state.deferred[k]; ok {
		tm.Stop()
		delete(t.state.deferred, k)
	}
}
