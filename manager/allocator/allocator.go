// Package allocator hands out the overlay's numbered resources: a VXLAN
// network identifier and a subnet for each network. It is a pure function of
// what is already allocated, so the leader can compute an allocation, put it
// in a Raft command, and every manager stores the same result.
package allocator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// FirstVNI is the lowest VXLAN network identifier skiff uses. Lower ones are
// left to other VXLAN users on the hosts, as Docker Swarm does.
const FirstVNI = 4096

// maxVNI is the largest 24-bit VNI.
const maxVNI = 1<<24 - 1

// ErrExhausted: the pool has no free subnet or VNI left.
var ErrExhausted = errors.New("address pool exhausted")

// Network is an allocated network's numbers.
type Network struct {
	VNI    uint32
	Subnet netip.Prefix
	// Gateway is the subnet's first address. No task gets it; it stays free
	// for a future gateway, as in Docker's overlay.
	Gateway netip.Addr
}

// Pool allocates subnets of one size from one CIDR.
type Pool struct {
	Prefix netip.Prefix
	// Bits is the prefix length of each subnet handed out (24 gives /24s).
	Bits int
}

// ParsePool parses a pool such as "10.0.0.0/8" with subnets of bits.
func ParsePool(cidr string, bits int) (Pool, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Pool{}, fmt.Errorf("parse address pool %q: %w", cidr, err)
	}
	p = p.Masked()
	if !p.Addr().Is4() {
		return Pool{}, fmt.Errorf("address pool %q: only IPv4 pools are supported", cidr)
	}
	if bits < p.Bits() || bits > 30 {
		return Pool{}, fmt.Errorf("address pool %q: subnet size /%d must be between /%d and /30", cidr, bits, p.Bits())
	}
	return Pool{Prefix: p, Bits: bits}, nil
}

// Allocate returns the lowest free VNI and the first free subnet of the pool
// that overlaps none of the used subnets.
func (p Pool) Allocate(usedVNIs map[uint32]bool, usedSubnets []netip.Prefix) (Network, error) {
	vni, err := NextVNI(usedVNIs)
	if err != nil {
		return Network{}, err
	}
	subnet, err := p.freeSubnet(usedSubnets)
	if err != nil {
		return Network{}, err
	}
	return Network{VNI: vni, Subnet: subnet, Gateway: subnet.Addr().Next()}, nil
}

// NextVNI returns the lowest VNI from FirstVNI up that is not used.
func NextVNI(used map[uint32]bool) (uint32, error) {
	for vni := uint32(FirstVNI); vni <= maxVNI; vni++ {
		if !used[vni] {
			return vni, nil
		}
	}
	return 0, fmt.Errorf("no free VNI: %w", ErrExhausted)
}

// Pinned checks a subnet a network pins instead of drawing one from the
// pool: IPv4, with room for a gateway and a task, and overlapping no subnet
// in use.
func Pinned(subnet netip.Prefix, used []netip.Prefix) (Network, error) {
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return Network{}, fmt.Errorf("subnet %s: only IPv4 subnets of /30 or larger are supported", subnet)
	}
	if overlapsAny(subnet, used) {
		return Network{}, fmt.Errorf("subnet %s overlaps a subnet already in use", subnet)
	}
	return Network{Subnet: subnet, Gateway: subnet.Addr().Next()}, nil
}

func (p Pool) freeSubnet(used []netip.Prefix) (netip.Prefix, error) {
	base := binary.BigEndian.Uint32(p.Prefix.Addr().AsSlice())
	count := uint64(1) << (p.Bits - p.Prefix.Bits())
	step := uint64(1) << (32 - p.Bits)
	for i := uint64(0); i < count; i++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base+uint32(i*step))
		cand := netip.PrefixFrom(netip.AddrFrom4(b), p.Bits)
		if !overlapsAny(cand, used) {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /%d in %s: %w", p.Bits, p.Prefix, ErrExhausted)
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if p.Overlaps(u) {
			return true
		}
	}
	return false
}
