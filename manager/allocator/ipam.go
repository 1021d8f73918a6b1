package allocator

import (
	"fmt"
	"net/netip"
	"sync"
)

// IPAM hands out addresses in overlay networks to tasks and nodes. The
// leader keeps one for its term, rebuilt from the store when it takes office
// and kept current from the store's events.
//
// Addresses are handed out round-robin from a cursor rather than lowest
// free first: a freed address is reused only after the rest of the subnet
// has been used, so an address that a stale DNS answer, neighbour entry or
// connection on some host may still point at is not given to a new task
// right away.
type IPAM struct {
	mu       sync.Mutex
	networks map[string]*subnet
}

type subnet struct {
	prefix netip.Prefix
	used   map[netip.Addr]bool
	next   netip.Addr
}

// NewIPAM returns an empty IPAM.
func NewIPAM() *IPAM {
	return &IPAM{networks: map[string]*subnet{}}
}

// AddNetwork registers a network's subnet; its gateway (the first address)
// is never handed out. Adding a known network does nothing. Only IPv4
// subnets with room for a gateway and at least one address (/30 or larger)
// can be registered.
func (a *IPAM) AddNetwork(id string, prefix netip.Prefix) error {
	if !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return fmt.Errorf("network %s: subnet %s: only IPv4 subnets of /30 or larger are supported", id, prefix)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.networks[id]; ok {
		return nil
	}
	prefix = prefix.Masked()
	gw := prefix.Addr().Next()
	a.networks[id] = &subnet{prefix: prefix, used: map[netip.Addr]bool{gw: true}, next: gw.Next()}
	return nil
}

// RemoveNetwork forgets a network.
func (a *IPAM) RemoveNetwork(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.networks, id)
}

// MarkUsed records an address as taken (read from the store). Unknown
// networks and addresses outside the subnet are ignored.
func (a *IPAM) MarkUsed(networkID string, addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.networks[networkID]; s != nil && s.prefix.Contains(addr) {
		s.used[addr] = true
	}
}

// Release returns an address to the pool.
func (a *IPAM) Release(networkID string, addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.networks[networkID]; s != nil && addr != s.prefix.Addr().Next() {
		delete(s.used, addr)
	}
}

// Allocate hands out the next free address of a network, with the subnet's
// prefix length.
func (a *IPAM) Allocate(networkID string) (netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.networks[networkID]
	if s == nil {
		return netip.Prefix{}, fmt.Errorf("network %s is not known to the allocator", networkID)
	}
	first := s.prefix.Addr().Next().Next() // after the network address and gateway
	addr := s.next
	for range 1 << (addr.BitLen() - s.prefix.Bits()) {
		if !s.prefix.Contains(addr) || isBroadcast(s.prefix, addr) {
			addr = first
		}
		if !s.used[addr] {
			s.used[addr] = true
			s.next = addr.Next()
			return netip.PrefixFrom(addr, s.prefix.Bits()), nil
		}
		addr = addr.Next()
	}
	return netip.Prefix{}, fmt.Errorf("network %s (%s): %w", networkID, s.prefix, ErrExhausted)
}

// isBroadcast reports whether addr is the subnet's last address.
func isBroadcast(p netip.Prefix, addr netip.Addr) bool {
	b := addr.As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	mask := uint32(1)<<host - 1
	return v&mask == mask
}
