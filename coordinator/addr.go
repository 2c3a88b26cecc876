package coordinator

import (
	"crypto/sha256"
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MeshPrefix4 is the CGNAT range every mesh's IPv4 addresses come from.
var MeshPrefix4 = netip.MustParsePrefix("100.64.0.0/10")

// MeshPrefix6 returns the trust domain's IPv6 ULA /48: fd00::/8 with 40 bits
// derived from the trust domain's name (RFC 4193 asks for random bits; a hash
// of the name is as collision-resistant and lets every party compute it).
func MeshPrefix6(td spiffeid.TrustDomain) netip.Prefix {
	h := sha256.Sum256([]byte(td.Name()))
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], h[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// addrFor maps the n-th allocation (from 1) to a node's addresses. IPv4
// skips .0 and .255 so no address looks like a network or broadcast address
// to tools that assume /24s; IPv6 embeds the IPv4 in the ULA /48.
func addrFor(td spiffeid.TrustDomain, seq uint64) (netip.Addr, netip.Addr, error) {
	if seq == 0 {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("coordinator: address sequence starts at 1")
	}
	idx := seq - 1
	block, host := idx/254, idx%254+1
	if block >= 1<<14 { // 2^22 addresses in a /10, 256 per block
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("coordinator: the mesh's IPv4 range %s is exhausted", MeshPrefix4)
	}
	base := MeshPrefix4.Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(block)<<8 | uint32(host)
	v4 := [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	a6 := MeshPrefix6(td).Addr().As16()
	copy(a6[12:], v4[:])
	return netip.AddrFrom4(v4), netip.AddrFrom16(a6), nil
}
