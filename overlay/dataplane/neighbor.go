package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetNeighbor tells the network's VXLAN device where a remote endpoint
// lives, with two permanent entries:
//   - a neighbour (ARP) entry ip → overlay.MAC(ip), from which the device
//     answers the local tasks' ARP requests (it is an ARP proxy);
//   - an FDB entry overlay.MAC(ip) → vtep, which says where to send frames
//     for that MAC.
//
// Both are replaced if present, so an endpoint that moved to another host
// is repointed in place. vtep must not be this host's own: local endpoints
// are reached over the bridge, and an FDB entry to ourselves would send
// their frames round the underlay. The network must have been ensured.
func (p *Plane) SetNeighbor(vni uint32, ip, vtep netip.Addr) error {
	if err := checkNeighbor(vni, ip, vtep); err != nil {
		return err
	}
	if vtep == p.vtep {
		return fmt.Errorf("neighbour %v (vni %d): vtep %v is this host's own", ip, vni, vtep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	vx, err := p.vxlanOf(vni)
	if err != nil {
		return fmt.Errorf("set neighbour %v (vni %d): %w", ip, vni, err)
	}
	if vx == nil {
		return fmt.Errorf("set neighbour %v (vni %d): network has no vxlan device %s: call EnsureNetwork first",
			ip, vni, p.names.vxlan(vni))
	}
	mac := overlay.MAC(ip)
	// FDB first: once the ARP entry exists, tasks send to the MAC, and the
	// MAC must already have somewhere to go.
	if err := p.h.NeighSet(fdbEntry(vx, mac, vtep)); err != nil {
		return fmt.Errorf("set fdb %s dst %v on %s (vni %d): %w", mac, vtep, vx.Attrs().Name, vni, err)
	}
	if err := p.h.NeighSet(arpEntry(vx, ip, mac)); err != nil {
		return fmt.Errorf("set neighbour %v lladdr %s on %s (vni %d): %w", ip, mac, vx.Attrs().Name, vni, err)
	}
	p.log.Debug("set neighbour", "vni", vni, "ip", ip, "mac", mac, "vtep", vtep)
	return nil
}

// DelNeighbor removes what SetNeighbor(vni, ip, vtep) programmed, but only
// while the endpoint's FDB entry still points at vtep: if the endpoint has
// since moved and been set again with its new host, a late removal for the
// old host leaves it alone. Entries, or a network, that are already gone
// are not an error.
func (p *Plane) DelNeighbor(vni uint32, ip, vtep netip.Addr) error {
	if err := checkNeighbor(vni, ip, vtep); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	vx, err := p.vxlanOf(vni)
	if err != nil {
		return fmt.Errorf("delete neighbour %v (vni %d): %w", ip, vni, err)
	}
	if vx == nil {
		return nil
	}
	mac := overlay.MAC(ip)
	fdb, err := dump(func() ([]netlink.Neigh, error) { return p.h.NeighList(vx.Attrs().Index, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list fdb of %s (vni %d): %w", vx.Attrs().Name, vni, err)
	}
	for _, e := range fdb {
		// Only the device's own entries (NTF_SELF): the dump also holds
		// what the bridge learned on the VXLAN port, which has no VTEP.
		if e.Flags&netlink.NTF_SELF != 0 && bytes.Equal(e.HardwareAddr, mac) && !e.IP.Equal(net.IP(vtep.AsSlice())) {
			p.log.Debug("neighbour moved; kept", "vni", vni, "ip", ip, "old_vtep", vtep, "vtep", e.IP)
			return nil
		}
	}
	// ARP entry first, the reverse of SetNeighbor: tasks stop using the MAC
	// before it loses its destination.
	if err := p.h.NeighDel(arpEntry(vx, ip, mac)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete neighbour %v on %s (vni %d): %w", ip, vx.Attrs().Name, vni, err)
	}
	if err := p.h.NeighDel(fdbEntry(vx, mac, vtep)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete fdb %s dst %v on %s (vni %d): %w", mac, vtep, vx.Attrs().Name, vni, err)
	}
	p.log.Debug("deleted neighbour", "vni", vni, "ip", ip, "mac", mac, "vtep", vtep)
	return nil
}

func checkNeighbor(vni uint32, ip, vtep netip.Addr) error {
	if err := checkVNI(vni); err != nil {
		return err
	}
	if !ip.Is4() || !vtep.Is4() {
		return fmt.Errorf("neighbour %v at vtep %v (vni %d): want IPv4 addresses", ip, vtep, vni)
	}
	return nil
}

// vxlanOf returns the network's VXLAN device, or nil if it has none.
func (p *Plane) vxlanOf(vni uint32) (netlink.Link, error) {
	link, err := p.linkByName(p.names.vxlan(vni))
	if err != nil || link == nil {
		return nil, err
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return nil, fmt.Errorf("%s is a %s, not a vxlan device", link.Attrs().Name, link.Type())
	}
	return link, nil
}

func arpEntry(vx netlink.Link, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    vx.Attrs().Index,
		Family:       unix.AF_INET,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(ip.AsSlice()),
		HardwareAddr: mac,
	}
}

// fdbEntry is an entry of the VXLAN device's own forwarding table
// (NTF_SELF), not the bridge's: it maps a MAC to the VTEP to send to.
func fdbEntry(vx netlink.Link, mac net.HardwareAddr, vtep netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    vx.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(vtep.AsSlice()),
		HardwareAddr: mac,
	}
}
