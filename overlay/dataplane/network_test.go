package dataplane

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
)

func TestNewFindsUnderlayMTU(t *testing.T) {
	requireRoot(t)
	for _, mtu := range []int{1500, 9000} {
		hst := newHosts(t, 1, mtu)[0]
		if got, want := hst.plane.MTU(), mtu-overlay.Overhead; got != want {
			t.Errorf("underlay mtu %d: MTU() = %d, want %d", mtu, got, want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	for name, cfg := range map[string]Config{
		"vtep not on a link": {VTEP: netip.MustParseAddr("198.18.201.1"), NetNSPath: hst.ns},
		"ipv6 vtep":          {VTEP: netip.MustParseAddr("fd00::1"), NetNSPath: hst.ns},
		"no such netns":      {VTEP: hst.vtep, NetNSPath: "/run/netns/skdp-does-not-exist"},
		"long prefix":        {VTEP: hst.vtep, NetNSPath: hst.ns, Prefix: "skif"},
		"prefix with a dash": {VTEP: hst.vtep, NetNSPath: hst.ns, Prefix: "s-k"},
	} {
		if p, err := New(cfg); err == nil {
			p.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestEnsureNetworkBuildsDevices(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	n := Network{ID: "net1", VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}
	must(t, hst.plane.EnsureNetwork(n))

	br, err := hst.h.LinkByName("sk-br-4096")
	must(t, err)
	if _, ok := br.(*netlink.Bridge); !ok {
		t.Fatalf("sk-br-4096 is a %s", br.Type())
	}
	link, err := hst.h.LinkByName("sk-vx-4096")
	must(t, err)
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("sk-vx-4096 is a %s", link.Type())
	}
	if vx.VxlanId != 4096 || vx.Port != overlay.VXLANPort || !vx.SrcAddr.Equal(net.IP(hst.vtep.AsSlice())) {
		t.Errorf("vxlan id %d port %d local %v; want 4096, %d, %v", vx.VxlanId, vx.Port, vx.SrcAddr, overlay.VXLANPort, hst.vtep)
	}
	if vx.Learning || !vx.Proxy || !vx.UDPCSum || vx.L2miss || vx.L3miss {
		t.Errorf("vxlan learning %v proxy %v udpcsum %v l2miss %v l3miss %v; want false true true false false",
			vx.Learning, vx.Proxy, vx.UDPCSum, vx.L2miss, vx.L3miss)
	}
	if vx.MasterIndex != br.Attrs().Index {
		t.Errorf("vxlan master %d, want bridge %d", vx.MasterIndex, br.Attrs().Index)
	}
	for _, l := range []netlink.Link{br, vx} {
		if l.Attrs().MTU != 1450 {
			t.Errorf("%s mtu %d, want 1450", l.Attrs().Name, l.Attrs().MTU)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s is down", l.Attrs().Name)
		}
	}
	if want := overlay.MAC(n.HostAddr.Addr()); !bytes.Equal(br.Attrs().HardwareAddr, want) {
		t.Errorf("bridge mac %s, want %s", br.Attrs().HardwareAddr, want)
	}
	if got := addrsOf(t, hst.h, br); !slices.Equal(got, []netip.Prefix{n.HostAddr}) {
		t.Errorf("bridge addresses %v, want %v", got, n.HostAddr)
	}
	if got, err := hst.plane.Networks(); err != nil || !slices.Equal(got, []uint32{4096}) {
		t.Errorf("Networks() = %v, %v; want [4096]", got, err)
	}
}

func TestEnsureNetworkMTUFollowsUnderlay(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 9000)[0]
	must(t, hst.plane.EnsureNetwork(Network{VNI: 7, HostAddr: mustPrefix("198.19.200.1/24")}))
	for _, name := range []string{"sk-br-7", "sk-vx-7"} {
		l, err := hst.h.LinkByName(name)
		must(t, err)
		if l.Attrs().MTU != 8950 {
			t.Errorf("%s mtu %d, want 8950", name, l.Attrs().MTU)
		}
	}
}

func TestEnsureNetworkRepairs(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	n := Network{ID: "net1", VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}
	must(t, hst.plane.EnsureNetwork(n))

	// Break what can be corrected in place, and the VXLAN device beyond
	// that: learning on cannot be turned off by a change of link.
	br, _ := hst.h.LinkByName("sk-br-4096")
	vx, _ := hst.h.LinkByName("sk-vx-4096")
	must(t, hst.h.LinkSetDown(br))
	must(t, hst.h.LinkSetMTU(br, 1300))
	must(t, hst.h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(mustPrefix("198.19.207.9/24"))}))
	must(t, hst.h.LinkDel(vx))
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "sk-vx-4096"
	must(t, hst.h.LinkAdd(&netlink.Vxlan{LinkAttrs: attrs, VxlanId: 4096, Port: 4789, Learning: true}))

	must(t, hst.plane.EnsureNetwork(n))
	br, _ = hst.h.LinkByName("sk-br-4096")
	link, _ := hst.h.LinkByName("sk-vx-4096")
	vx2 := link.(*netlink.Vxlan)
	if br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().MTU != 1450 {
		t.Errorf("bridge up %v mtu %d; want up, 1450", br.Attrs().Flags&net.FlagUp != 0, br.Attrs().MTU)
	}
	if got := addrsOf(t, hst.h, br); !slices.Equal(got, []netip.Prefix{n.HostAddr}) {
		t.Errorf("bridge addresses %v, want only %v", got, n.HostAddr)
	}
	if vx2.Learning || !vx2.Proxy || vx2.MasterIndex != br.Attrs().Index || vx2.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("vxlan not rebuilt: learning %v proxy %v master %d up %v", vx2.Learning, vx2.Proxy, vx2.MasterIndex, vx2.Attrs().Flags&net.FlagUp != 0)
	}

	// A new host address replaces the old one, and the MAC follows it.
	n.HostAddr = mustPrefix("198.19.200.2/24")
	must(t, hst.plane.EnsureNetwork(n))
	br, _ = hst.h.LinkByName("sk-br-4096")
	if got := addrsOf(t, hst.h, br); !slices.Equal(got, []netip.Prefix{n.HostAddr}) {
		t.Errorf("after a new host address: bridge addresses %v, want %v", got, n.HostAddr)
	}
	if want := overlay.MAC(n.HostAddr.Addr()); !bytes.Equal(br.Attrs().HardwareAddr, want) {
		t.Errorf("after a new host address: bridge mac %s, want %s", br.Attrs().HardwareAddr, want)
	}
}

func TestEnsureNetworkRejectsBadInput(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	for name, n := range map[string]Network{
		"vni 0":         {VNI: 0, HostAddr: mustPrefix("198.19.200.1/24")},
		"vni too large": {VNI: 1 << 24, HostAddr: mustPrefix("198.19.200.1/24")},
		"no address":    {VNI: 5},
		"ipv6 address":  {VNI: 5, HostAddr: mustPrefix("fd00::1/64")},
	} {
		if err := hst.plane.EnsureNetwork(n); err == nil {
			t.Errorf("%s: EnsureNetwork succeeded", name)
		}
	}
	if links := ourLinks(t, hst); len(links) != 0 {
		t.Errorf("links left after rejected input: %v", links)
	}
}

func TestRemoveNetworkLeavesNothing(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	sandbox := newNetNS(t, "sb")
	n := Network{ID: "net1", VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}
	other := Network{ID: "net2", VNI: 4097, HostAddr: mustPrefix("198.19.201.1/24")}
	must(t, hst.plane.EnsureNetwork(n))
	must(t, hst.plane.EnsureNetwork(other))
	must(t, hst.plane.Attach(Attachment{TaskID: "t1", VNI: 4096, NetNSPath: sandbox, Addr: mustPrefix("198.19.200.10/24")}))

	for range 2 {
		must(t, hst.plane.RemoveNetwork(4096))
		if got := ourLinks(t, hst); !slices.Equal(got, []string{"sk-br-4097", "sk-vx-4097"}) {
			t.Errorf("links after RemoveNetwork(4096): %v; want only the other network's", got)
		}
		if got := isolationComments(t, hst); !slices.Equal(got, []string{"skiff: isolate sk-br-4097"}) {
			t.Errorf("isolation rules after RemoveNetwork(4096): %q", got)
		}
		if _, err := handleAt(t, sandbox).LinkByName("eth0"); err == nil {
			t.Error("the task's interface outlived its network")
		}
	}
	must(t, hst.plane.RemoveNetwork(4097))
	if got := ourLinks(t, hst); len(got) != 0 {
		t.Errorf("links after removing every network: %v", got)
	}
	if tableExists(t, hst) {
		t.Error("isolation table outlived the last network")
	}
	if got, err := hst.plane.Networks(); err != nil || len(got) != 0 {
		t.Errorf("Networks() = %v, %v; want none", got, err)
	}
}

func addrsOf(tb testing.TB, h *netlink.Handle, link netlink.Link) []netip.Prefix {
	tb.Helper()
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	must(tb, err)
	var out []netip.Prefix
	for _, a := range addrs {
		out = append(out, prefixOf(a.IPNet))
	}
	return out
}

// ourLinks lists the names of the host's links that the Plane would call
// its own.
func ourLinks(tb testing.TB, hst *host) []string {
	tb.Helper()
	links, err := hst.h.LinkList()
	must(tb, err)
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "sk-") {
			names = append(names, l.Attrs().Name)
		}
	}
	slices.Sort(names)
	return names
}
