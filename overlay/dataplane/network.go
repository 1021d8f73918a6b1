package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Network is one overlay network as this host sees it.
type Network struct {
	// ID is the network's cluster ID. It only labels log records.
	ID string
	// VNI is the network's VXLAN network identifier, 1 to 2^24-1. It names
	// the network's devices.
	VNI uint32
	// HostAddr is this host's own address in the network, with the
	// subnet's prefix length (10.0.1.2/24). It goes on the bridge, which
	// gives the host a route to the subnet and a place for the embedded DNS
	// to listen; the bridge's MAC is overlay.MAC of it, so that other hosts
	// can program a neighbour entry for it as for any endpoint.
	HostAddr netip.Prefix
	// Internal networks give their tasks no way out of the cluster (see
	// egress.go).
	Internal bool
}

func (n Network) check() error {
	if err := checkVNI(n.VNI); err != nil {
		return fmt.Errorf("network %s: %w", n.ID, err)
	}
	if !n.HostAddr.IsValid() || !n.HostAddr.Addr().Is4() {
		return fmt.Errorf("network %s (vni %d): host address %v: want an IPv4 address with a prefix length", n.ID, n.VNI, n.HostAddr)
	}
	return nil
}

// EnsureNetwork makes the network's devices exist and be right: the bridge
// with the host's address and MAC, and the VXLAN device enslaved to it,
// both up and at the overlay MTU, and the rule that keeps other networks'
// traffic off this one (see isolate.go). It is idempotent: what is already
// right is left alone, what is wrong is corrected, and a device that cannot
// be corrected in place (a VXLAN device with another VNI, say) is
// recreated.
func (p *Plane) EnsureNetwork(n Network) error {
	if err := n.check(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	log := p.log.With("network", n.ID, "vni", n.VNI)

	br, err := p.ensureBridge(n)
	if err != nil {
		return err
	}
	vx, err := p.ensureVXLAN(n, br)
	if err != nil {
		return err
	}
	if err := setUp(p.h, vx); err != nil {
		return fmt.Errorf("network %s (vni %d): %w", n.ID, n.VNI, err)
	}
	if err := p.ensureHostAddr(n, br); err != nil {
		return err
	}
	if err := setUp(p.h, br); err != nil {
		return fmt.Errorf("network %s (vni %d): %w", n.ID, n.VNI, err)
	}
	if err := p.syncRules(); err != nil {
		return fmt.Errorf("network %s (vni %d): %w", n.ID, n.VNI, err)
	}
	log.Debug("network ensured", "bridge", br.Attrs().Name, "vxlan", vx.Attrs().Name, "host_addr", n.HostAddr)
	return nil
}

// ensureBridge returns the network's bridge, creating it if need be.
func (p *Plane) ensureBridge(n Network) (netlink.Link, error) {
	name := p.names.bridge(n.VNI)
	mac := overlay.MAC(n.HostAddr.Addr())
	link, err := p.linkByName(name)
	if err != nil {
		return nil, err
	}
	if link != nil {
		if _, ok := link.(*netlink.Bridge); !ok {
			if err := p.deleteLink(link, "a bridge's name on another kind of link"); err != nil {
				return nil, err
			}
			link = nil
		}
	}
	if link == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = p.mtu
		// A bridge's MAC otherwise follows the lowest MAC among its ports,
		// and changes as tasks come and go; fixed, it is also what the
		// other hosts derive for the host's address.
		attrs.HardwareAddr = mac
		if err := p.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, fmt.Errorf("create bridge %s (vni %d): %w", name, n.VNI, err)
		}
		p.log.Info("created bridge", "link", name, "vni", n.VNI, "network", n.ID, "mtu", p.mtu)
		if link, err = p.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up new bridge %s (vni %d): %w", name, n.VNI, err)
		}
	}
	if err := p.setMTU(p.h, link); err != nil {
		return nil, fmt.Errorf("bridge of vni %d: %w", n.VNI, err)
	}
	if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := p.h.LinkSetHardwareAddr(link, mac); err != nil {
			return nil, fmt.Errorf("set mac %s on bridge %s (vni %d): %w", mac, name, n.VNI, err)
		}
	}
	// The alias is where the egress rules read whether the network is
	// internal, so that they can be derived from the devices alone.
	alias := ""
	if n.Internal {
		alias = internalAlias
	}
	if link.Attrs().Alias != alias {
		if err := p.h.LinkSetAlias(link, alias); err != nil {
			return nil, fmt.Errorf("mark bridge %s (vni %d) internal=%t: %w", name, n.VNI, n.Internal, err)
		}
		link.Attrs().Alias = alias
	}
	return link, nil
}

// wantVXLAN is the network's VXLAN device as it must be. Static entries
// replace what VXLAN would otherwise learn or flood:
//   - Learning off: remote MACs come only from SetNeighbor's FDB entries,
//     never from whatever source address arrives on port 4789.
//   - Proxy on: the device answers the tasks' ARP requests itself, from the
//     neighbour entries SetNeighbor programs, so broadcasts never cross the
//     underlay (there is no all-zero flood entry to send them to).
//   - UDPCSum on: the outer checksum costs almost nothing to send (the
//     kernel derives it from the inner one, "local checksum offload") and
//     lets a receiving NIC that cannot parse VXLAN still vouch for the
//     inner packet's checksum, so the receiver skips checksumming the data
//     in software. It is the kernel's default; set explicitly so that the
//     device does not depend on it.
//   - No lower device: it would tie the VXLAN device's life to the
//     underlay link's (the kernel deletes a VXLAN device with its lower
//     device); the route to each VTEP picks the way out.
func (p *Plane) wantVXLAN(n Network, br netlink.Link) *netlink.Vxlan {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = p.names.vxlan(n.VNI)
	attrs.MTU = p.mtu
	attrs.MasterIndex = br.Attrs().Index
	return &netlink.Vxlan{
		LinkAttrs: attrs,
		VxlanId:   int(n.VNI),
		SrcAddr:   net.IP(p.vtep.AsSlice()),
		Port:      overlay.VXLANPort,
		Learning:  false,
		Proxy:     true,
		UDPCSum:   true,
	}
}

// vxlanMismatch says why an existing VXLAN device cannot be kept, or ""
// if it can. MTU, master and up are corrected in place; these cannot be.
func vxlanMismatch(have, want *netlink.Vxlan) string {
	switch {
	case have.VxlanId != want.VxlanId:
		return fmt.Sprintf("vni %d, want %d", have.VxlanId, want.VxlanId)
	case !have.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local %v, want %v", have.SrcAddr, want.SrcAddr)
	case have.Port != want.Port:
		return fmt.Sprintf("dstport %d, want %d", have.Port, want.Port)
	case have.Learning != want.Learning:
		return "learning on"
	case have.Proxy != want.Proxy:
		return "proxy off"
	case have.UDPCSum != want.UDPCSum:
		return "udp checksum off"
	case have.VtepDevIndex != 0:
		return "bound to a lower device"
	}
	return ""
}

// ensureVXLAN returns the network's VXLAN device, enslaved to br,
// creating or recreating it if need be.
func (p *Plane) ensureVXLAN(n Network, br netlink.Link) (netlink.Link, error) {
	want := p.wantVXLAN(n, br)
	name := want.Name
	link, err := p.linkByName(name)
	if err != nil {
		return nil, err
	}
	if link != nil {
		why := "a vxlan device's name on another kind of link"
		if have, ok := link.(*netlink.Vxlan); ok {
			why = vxlanMismatch(have, want)
		}
		if why != "" {
			if err := p.deleteLink(link, why); err != nil {
				return nil, err
			}
			link = nil
		}
	}
	if link == nil {
		if err := p.h.LinkAdd(want); err != nil {
			if errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("%w (another VXLAN device in this namespace may use vni %d and port %d)",
					err, n.VNI, overlay.VXLANPort)
			}
			return nil, fmt.Errorf("create vxlan %s (vni %d): %w", name, n.VNI, err)
		}
		p.log.Info("created vxlan", "link", name, "vni", n.VNI, "network", n.ID,
			"local", p.vtep, "mtu", p.mtu, "bridge", br.Attrs().Name)
		if link, err = p.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up new vxlan %s (vni %d): %w", name, n.VNI, err)
		}
	}
	if err := p.setMTU(p.h, link); err != nil {
		return nil, fmt.Errorf("vxlan of vni %d: %w", n.VNI, err)
	}
	if err := setMaster(p.h, link, br); err != nil {
		return nil, fmt.Errorf("vxlan of vni %d: %w", n.VNI, err)
	}
	return link, nil
}

// ensureHostAddr makes n.HostAddr the bridge's only IPv4 address: a stale
// one would leave a route to a subnet the host no longer has.
func (p *Plane) ensureHostAddr(n Network, br netlink.Link) error {
	addrs, err := dump(func() ([]netlink.Addr, error) { return p.h.AddrList(br, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of bridge %s (vni %d): %w", br.Attrs().Name, n.VNI, err)
	}
	have := false
	for _, a := range addrs {
		if prefixOf(a.IPNet) == n.HostAddr {
			have = true
			continue
		}
		if err := p.h.AddrDel(br, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %v from bridge %s (vni %d): %w", a.IPNet, br.Attrs().Name, n.VNI, err)
		}
		p.log.Info("removed stale address", "link", br.Attrs().Name, "vni", n.VNI, "addr", a.IPNet)
	}
	if have {
		return nil
	}
	if err := p.h.AddrReplace(br, &netlink.Addr{IPNet: ipNet(n.HostAddr)}); err != nil {
		return fmt.Errorf("set address %v on bridge %s (vni %d): %w", n.HostAddr, br.Attrs().Name, n.VNI, err)
	}
	p.log.Info("set host address", "link", br.Attrs().Name, "vni", n.VNI, "addr", n.HostAddr)
	return nil
}

// RemoveNetwork deletes the network's devices, and with them every task's
// attachment to it and every neighbour and FDB entry programmed for it. A
// network that has no devices is not an error.
func (p *Plane) RemoveNetwork(vni uint32) error {
	if err := checkVNI(vni); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	links, err := p.linkList()
	if err != nil {
		return fmt.Errorf("remove network vni %d: %w", vni, err)
	}
	// Veths first, then the VXLAN device, then the bridge: a veth left
	// behind without its bridge would be a task cut off without anyone
	// knowing.
	for _, link := range links {
		if _, v, ok := p.vethOwner(link); ok && v == vni {
			if err := p.deleteLink(link, fmt.Sprintf("network vni %d removed", vni)); err != nil {
				return err
			}
		}
	}
	for _, name := range []string{p.names.vxlan(vni), p.names.bridge(vni)} {
		link, err := p.linkByName(name)
		if err != nil {
			return fmt.Errorf("remove network vni %d: %w", vni, err)
		}
		if link == nil {
			continue
		}
		if err := p.deleteLink(link, fmt.Sprintf("network vni %d removed", vni)); err != nil {
			return err
		}
	}
	if err := p.syncRules(); err != nil {
		return fmt.Errorf("remove network vni %d: %w", vni, err)
	}
	return nil
}

// Networks lists, in order, the VNIs that have a bridge or a VXLAN device
// in the namespace, whoever created them: what a restarted agent finds.
func (p *Plane) Networks() ([]uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.networks()
}

func (p *Plane) networks() ([]uint32, error) {
	links, err := p.linkList()
	if err != nil {
		return nil, err
	}
	var vnis []uint32
	for _, link := range links {
		if vni, ok := p.networkOf(link); ok && !slices.Contains(vnis, vni) {
			vnis = append(vnis, vni)
		}
	}
	slices.Sort(vnis)
	return vnis, nil
}

// networkOf returns the VNI of one of the Plane's bridges or VXLAN
// devices.
func (p *Plane) networkOf(link netlink.Link) (uint32, bool) {
	name := link.Attrs().Name
	switch link.(type) {
	case *netlink.Bridge:
		return p.names.parseVNI(name, bridgeKind)
	case *netlink.Vxlan:
		return p.names.parseVNI(name, vxlanKind)
	}
	return 0, false
}

// vethOwner returns the task and VNI of one of the Plane's host-side
// veths. A veth named like the Plane's whose alias cannot be read still
// counts as the Plane's, with an empty task ID: it is a half-made one.
func (p *Plane) vethOwner(link netlink.Link) (taskID string, vni uint32, ok bool) {
	if _, isVeth := link.(*netlink.Veth); !isVeth || !p.names.isVeth(link.Attrs().Name) {
		return "", 0, false
	}
	taskID, vni, ok = parseVethAlias(link.Attrs().Alias)
	if !ok {
		return "", 0, true
	}
	return taskID, vni, true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}
