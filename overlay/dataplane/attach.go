package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultIfName is the name of a task's interface inside its sandbox
// unless Attachment.IfName says otherwise.
const DefaultIfName = "eth0"

// Attachment is one task's interface in one network.
type Attachment struct {
	// TaskID is the task's cluster ID. With VNI it names the host side of
	// the veth, so one task may be attached to several networks.
	TaskID string
	// VNI is the network's; EnsureNetwork must have been called for it.
	VNI uint32
	// NetNSPath is the task's sandbox network namespace, such as
	// /proc/<pid of the sandbox container>/ns/net.
	NetNSPath string
	// Addr is the task's address in the network, with the subnet's prefix
	// length. The interface's MAC is overlay.MAC of it.
	Addr netip.Prefix
	// IfName is the interface's name in the sandbox; DefaultIfName when
	// empty. Give each network of a task its own (eth0, eth1, …).
	IfName string
	// Gateway, when set, becomes the sandbox's default route, through
	// this interface: the host's own address in the network, for egress
	// (see egress.go). At most one of a task's attachments has one.
	Gateway netip.Addr
}

func (a *Attachment) check() error {
	if a.TaskID == "" {
		return errors.New("attachment: empty task ID")
	}
	if err := checkVNI(a.VNI); err != nil {
		return fmt.Errorf("attach task %s: %w", a.TaskID, err)
	}
	if a.NetNSPath == "" {
		return fmt.Errorf("attach task %s (vni %d): empty sandbox namespace path", a.TaskID, a.VNI)
	}
	if !a.Addr.IsValid() || !a.Addr.Addr().Is4() {
		return fmt.Errorf("attach task %s (vni %d): address %v: want an IPv4 address with a prefix length", a.TaskID, a.VNI, a.Addr)
	}
	if a.IfName == "" {
		a.IfName = DefaultIfName
	}
	if a.Gateway.IsValid() && !a.Addr.Masked().Contains(a.Gateway) {
		return fmt.Errorf("attach task %s (vni %d): gateway %s is outside the task's subnet %s", a.TaskID, a.VNI, a.Gateway, a.Addr.Masked())
	}
	if len(a.IfName) > maxIfName {
		return fmt.Errorf("attach task %s (vni %d): interface name %q is longer than %d bytes", a.TaskID, a.VNI, a.IfName, maxIfName)
	}
	return nil
}

// Attach plumbs a task into a network: a veth pair whose host end (named
// from the task ID and VNI) is a port of the network's bridge, and whose
// other end is created directly inside the sandbox as IfName, with the
// task's MAC, the overlay MTU and the task's address, up, with the
// sandbox's loopback up too. Creating the peer in the sandbox in the same
// request as the host end means there is never a half-moved interface with
// a temporary name.
//
// Attach is idempotent. A correct attachment is left untouched; one that is
// half done (down, no address, not on the bridge) is completed; one whose
// peer is not the sandbox's IfName (the sandbox was replaced, say) is
// deleted and made again. A sandbox IfName that is not this task's veth is
// an error, never deleted.
func (p *Plane) Attach(a Attachment) error {
	if err := a.check(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	hostName := p.names.veth(a.TaskID, a.VNI)
	log := p.log.With("task", a.TaskID, "vni", a.VNI, "veth", hostName)
	fail := func(format string, args ...any) error {
		return fmt.Errorf("attach task %s (vni %d, veth %s): %w", a.TaskID, a.VNI, hostName, fmt.Errorf(format, args...))
	}

	br, err := p.linkByName(p.names.bridge(a.VNI))
	if err != nil {
		return fail("%w", err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fail("network has no bridge %s: call EnsureNetwork first", p.names.bridge(a.VNI))
	}

	sbNS, err := netns.GetFromPath(a.NetNSPath)
	if err != nil {
		return fail("open sandbox %s: %w", a.NetNSPath, err)
	}
	defer sbNS.Close()
	sb, err := netlink.NewHandleAt(sbNS, unix.NETLINK_ROUTE)
	if err != nil {
		return fail("open rtnetlink in sandbox %s: %w", a.NetNSPath, err)
	}
	defer sb.Close()

	host, peer, err := p.existingVeth(sb, sbNS, a, hostName)
	if err != nil {
		return fail("%w", err)
	}
	if host == nil {
		if host, peer, err = p.createVeth(sb, sbNS, a, hostName, br); err != nil {
			return fail("%w", err)
		}
		log.Info("created veth", "sandbox", a.NetNSPath, "ifname", a.IfName, "addr", a.Addr)
	}

	if err := p.setMTU(p.h, host); err != nil {
		return fail("%w", err)
	}
	if err := setMaster(p.h, host, br); err != nil {
		return fail("%w", err)
	}
	if err := setUp(p.h, host); err != nil {
		return fail("%w", err)
	}
	if err := p.configureSandbox(sb, peer, a); err != nil {
		return fail("sandbox %s: %w", a.NetNSPath, err)
	}
	log.Debug("attachment ensured", "sandbox", a.NetNSPath, "ifname", a.IfName, "addr", a.Addr)
	return nil
}

// existingVeth returns the task's host-side veth and its peer in the
// sandbox if both exist and belong together, after deleting a host-side
// veth that cannot be kept. It returns nil links when Attach must create
// the pair.
func (p *Plane) existingVeth(sb *netlink.Handle, sbNS netns.NsHandle, a Attachment, hostName string) (host, peer netlink.Link, err error) {
	host, err = p.linkByName(hostName)
	if err != nil {
		return nil, nil, err
	}
	peer, err = linkByName(sb, a.IfName)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: %w", a.NetNSPath, err)
	}
	if host == nil {
		if peer != nil {
			return nil, nil, fmt.Errorf("sandbox %s already has an interface %s that is not this task's", a.NetNSPath, a.IfName)
		}
		return nil, nil, nil
	}

	// The name is a hash: make sure it is ours for this task before
	// touching it.
	if taskID, vni, ok := parseVethAlias(host.Attrs().Alias); ok && (taskID != a.TaskID || vni != a.VNI) {
		return nil, nil, fmt.Errorf("veth name collides with task %s's in vni %d", taskID, vni)
	}
	why := p.pairMismatch(sbNS, a, host, peer)
	if why == "" {
		return host, peer, nil
	}
	if err := p.deleteLink(host, "redo attachment: "+why); err != nil {
		return nil, nil, err
	}
	// The peer went with the host end if it was its peer; any other
	// interface of that name is not ours to delete.
	if peer, err = linkByName(sb, a.IfName); err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: %w", a.NetNSPath, err)
	}
	if peer != nil {
		return nil, nil, fmt.Errorf("sandbox %s already has an interface %s that is not this task's", a.NetNSPath, a.IfName)
	}
	return nil, nil, nil
}

// pairMismatch says why host and peer are not this attachment's veth pair,
// or "" if they are.
func (p *Plane) pairMismatch(sbNS netns.NsHandle, a Attachment, host, peer netlink.Link) string {
	if _, ok := host.(*netlink.Veth); !ok {
		return "a veth's name on a " + host.Type()
	}
	if host.Attrs().Alias != vethAlias(a.TaskID, a.VNI) {
		return "alias missing: creation was interrupted"
	}
	if peer == nil {
		return "peer not in the sandbox as " + a.IfName
	}
	if _, ok := peer.(*netlink.Veth); !ok {
		return "sandbox " + a.IfName + " is a " + peer.Type()
	}
	// Each end names the other's index in its own namespace (IFLA_LINK);
	// the namespace ID settles that the host end's peer is in this
	// sandbox and not one whose indexes happen to match.
	if host.Attrs().ParentIndex != peer.Attrs().Index || peer.Attrs().ParentIndex != host.Attrs().Index {
		return "peer not in the sandbox as " + a.IfName
	}
	if nsid, err := p.h.GetNetNsIdByFd(int(sbNS)); err == nil && nsid >= 0 && host.Attrs().NetNsID != nsid {
		return "peer in another namespace"
	}
	if !bytes.Equal(peer.Attrs().HardwareAddr, overlay.MAC(a.Addr.Addr())) {
		// A different MAC means a different address: remote hosts derive
		// the MAC from the address, so the interface must be made afresh.
		return "peer has another MAC"
	}
	return ""
}

// createVeth makes the pair with the peer created inside the sandbox.
func (p *Plane) createVeth(sb *netlink.Handle, sbNS netns.NsHandle, a Attachment, hostName string, br netlink.Link) (host, peer netlink.Link, err error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = p.mtu // the peer gets the same
	attrs.MasterIndex = br.Attrs().Index
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         a.IfName,
		PeerHardwareAddr: overlay.MAC(a.Addr.Addr()),
		PeerNamespace:    netlink.NsFd(sbNS),
	}
	if err := p.h.LinkAdd(veth); err != nil {
		// LinkAdd creates, then enslaves: clean up a pair made but not
		// attached, so that a retry starts afresh.
		if link, _ := p.linkByName(hostName); link != nil {
			_ = p.h.LinkDel(link)
		}
		return nil, nil, fmt.Errorf("create veth pair with %s in sandbox %s: %w", a.IfName, a.NetNSPath, err)
	}
	host, err = p.h.LinkByName(hostName)
	if err != nil {
		return nil, nil, fmt.Errorf("look up new veth: %w", err)
	}
	// The alias marks the veth as complete enough to keep: set last, so an
	// interrupted Attach leaves a veth that the next one redoes.
	if err := p.h.LinkSetAlias(host, vethAlias(a.TaskID, a.VNI)); err != nil {
		return nil, nil, fmt.Errorf("set alias: %w", err)
	}
	peer, err = sb.LinkByName(a.IfName)
	if err != nil {
		return nil, nil, fmt.Errorf("look up new %s in sandbox %s: %w", a.IfName, a.NetNSPath, err)
	}
	return host, peer, nil
}

// configureSandbox gives the task's interface its MTU and address (its
// only IPv4 address) and brings it and the loopback up.
func (p *Plane) configureSandbox(sb *netlink.Handle, peer netlink.Link, a Attachment) error {
	if err := p.setMTU(sb, peer); err != nil {
		return err
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return sb.AddrList(peer, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", a.IfName, err)
	}
	have := false
	for _, addr := range addrs {
		if prefixOf(addr.IPNet) == a.Addr {
			have = true
			continue
		}
		if err := sb.AddrDel(peer, &addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %v from %s: %w", addr.IPNet, a.IfName, err)
		}
	}
	if !have {
		if err := sb.AddrReplace(peer, &netlink.Addr{IPNet: ipNet(a.Addr)}); err != nil {
			return fmt.Errorf("set address %v on %s: %w", a.Addr, a.IfName, err)
		}
	}
	if err := setUp(sb, peer); err != nil {
		return err
	}
	if a.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: peer.Attrs().Index, Gw: a.Gateway.AsSlice(), Scope: netlink.SCOPE_UNIVERSE}
		if err := sb.RouteReplace(route); err != nil {
			return fmt.Errorf("set default route via %s on %s: %w", a.Gateway, a.IfName, err)
		}
	}
	lo, err := sb.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo: %w", err)
	}
	return setUp(sb, lo)
}

// Detach removes every attachment of the task, in every network: the
// host-side veths, and with each its peer in the sandbox. A task with no
// attachment is not an error.
func (p *Plane) Detach(taskID string) error {
	if taskID == "" {
		return errors.New("detach: empty task ID")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	links, err := p.linkList()
	if err != nil {
		return fmt.Errorf("detach task %s: %w", taskID, err)
	}
	for _, link := range links {
		if owner, _, ok := p.vethOwner(link); ok && owner == taskID {
			if err := p.deleteLink(link, "task "+taskID+" detached"); err != nil {
				return fmt.Errorf("detach task %s: %w", taskID, err)
			}
		}
	}
	return nil
}

// DetachNetwork removes the task's attachment to one network only, for a
// task that leaves a network while it runs. It does not scan the links, so
// it is cheaper than Detach.
func (p *Plane) DetachNetwork(taskID string, vni uint32) error {
	if taskID == "" {
		return errors.New("detach: empty task ID")
	}
	if err := checkVNI(vni); err != nil {
		return fmt.Errorf("detach task %s: %w", taskID, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	link, err := p.linkByName(p.names.veth(taskID, vni))
	if err != nil {
		return fmt.Errorf("detach task %s (vni %d): %w", taskID, vni, err)
	}
	if link == nil {
		return nil
	}
	owner, v, ok := p.vethOwner(link)
	if !ok {
		return fmt.Errorf("detach task %s (vni %d): %s is a %s, not one of this plane's veths", taskID, vni, link.Attrs().Name, link.Type())
	}
	if owner != "" && (owner != taskID || v != vni) {
		return fmt.Errorf("detach task %s (vni %d): %s belongs to task %s in vni %d", taskID, vni, link.Attrs().Name, owner, v)
	}
	return p.deleteLink(link, fmt.Sprintf("task %s detached from vni %d", taskID, vni))
}
