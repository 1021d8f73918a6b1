package dataplane

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// entries returns the VXLAN device's neighbour entry for ip (its MAC) and
// FDB entry for ip's MAC (its VTEP), each invalid if absent.
func entries(tb testing.TB, hst *host, vni uint32, ip netip.Addr) (mac string, vtep netip.Addr) {
	tb.Helper()
	vx, err := hst.h.LinkByName(hst.plane.names.vxlan(vni))
	must(tb, err)
	arp, err := hst.h.NeighList(vx.Attrs().Index, unix.AF_INET)
	must(tb, err)
	for _, n := range arp {
		if n.IP.Equal(ip.AsSlice()) {
			if n.State != netlink.NUD_PERMANENT {
				tb.Errorf("neighbour %v state %#x, want permanent", ip, n.State)
			}
			mac = n.HardwareAddr.String()
		}
	}
	fdb, err := hst.h.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	must(tb, err)
	for _, n := range fdb {
		// The bridge's own entries (learned on the VXLAN port) are in the
		// dump too; only the VXLAN device's (NTF_SELF) say where to send.
		if n.Flags&netlink.NTF_SELF != 0 && bytes.Equal(n.HardwareAddr, overlay.MAC(ip)) {
			if n.State != netlink.NUD_PERMANENT {
				tb.Errorf("fdb %s state %#x, want permanent", n.HardwareAddr, n.State)
			}
			vtep, _ = netip.AddrFromSlice(n.IP.To4())
		}
	}
	return mac, vtep
}

func TestNeighbors(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	must(t, hst.plane.EnsureNetwork(Network{VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}))
	ip := netip.MustParseAddr("198.19.200.20")
	vtep2, vtep3 := netip.MustParseAddr("198.18.200.2"), netip.MustParseAddr("198.18.200.3")
	wantMAC := overlay.MAC(ip).String()

	for range 2 {
		must(t, hst.plane.SetNeighbor(4096, ip, vtep2))
		if mac, vtep := entries(t, hst, 4096, ip); mac != wantMAC || vtep != vtep2 {
			t.Fatalf("after SetNeighbor: mac %q vtep %v; want %s, %v", mac, vtep, wantMAC, vtep2)
		}
	}
	// The endpoint moved: repointed in place, and a late removal for its
	// old host leaves it alone.
	must(t, hst.plane.SetNeighbor(4096, ip, vtep3))
	must(t, hst.plane.DelNeighbor(4096, ip, vtep2))
	if mac, vtep := entries(t, hst, 4096, ip); mac != wantMAC || vtep != vtep3 {
		t.Fatalf("after a move and a stale delete: mac %q vtep %v; want %s, %v", mac, vtep, wantMAC, vtep3)
	}
	for range 2 {
		must(t, hst.plane.DelNeighbor(4096, ip, vtep3))
		if mac, vtep := entries(t, hst, 4096, ip); mac != "" || vtep.IsValid() {
			t.Fatalf("after DelNeighbor: mac %q vtep %v; want none", mac, vtep)
		}
	}

	if err := hst.plane.SetNeighbor(4096, ip, hst.vtep); err == nil {
		t.Error("SetNeighbor to this host's own vtep succeeded")
	}
	if err := hst.plane.SetNeighbor(4097, ip, vtep2); err == nil {
		t.Error("SetNeighbor in a network that was never ensured succeeded")
	}
	must(t, hst.plane.DelNeighbor(4097, ip, vtep2))
}
