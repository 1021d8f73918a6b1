package dataplane

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// snapshot describes everything of the Plane's in a host and its
// sandboxes, indexes and rule handles included, so that two snapshots
// are equal only if nothing was changed, recreated or rewritten.
func snapshot(tb testing.TB, hst *host, sandboxes ...string) string {
	tb.Helper()
	var lines []string
	describe := func(where string, h *netlink.Handle, l netlink.Link) {
		a := l.Attrs()
		lines = append(lines, fmt.Sprintf("%s link %s #%d %s mtu=%d master=%d up=%v mac=%s alias=%q addrs=%v",
			where, a.Name, a.Index, l.Type(), a.MTU, a.MasterIndex, a.Flags&1 != 0, a.HardwareAddr, a.Alias, addrsOf(tb, h, l)))
		for _, fam := range []int{unix.AF_INET, unix.AF_BRIDGE} {
			if _, ok := l.(*netlink.Vxlan); !ok {
				break
			}
			neighs, err := h.NeighList(a.Index, fam)
			must(tb, err)
			for _, n := range neighs {
				lines = append(lines, fmt.Sprintf("%s neigh %s %v %s state=%#x flags=%#x", where, a.Name, n.IP, n.HardwareAddr, n.State, n.Flags))
			}
		}
	}
	links, err := hst.h.LinkList()
	must(tb, err)
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "sk-") {
			describe("host", hst.h, l)
		}
	}
	for _, sb := range sandboxes {
		h := handleAt(tb, sb)
		links, err := h.LinkList()
		must(tb, err)
		for _, l := range links {
			describe(sb, h, l)
		}
	}
	if tableExists(tb, hst) {
		c := nftConn(tb, hst)
		table := hst.plane.isolationTable()
		rules, err := c.GetRules(table, &nftables.Chain{Name: isolationChain, Table: table})
		must(tb, err)
		for _, r := range rules {
			lines = append(lines, fmt.Sprintf("rule #%d %x", r.Handle, r.UserData))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestEverythingTwiceChangesNothing(t *testing.T) {
	requireRoot(t)
	w := newCrossWorld(t)
	attA := Attachment{TaskID: "task-a", VNI: 4200, NetNSPath: w.sandA, Addr: w.taskA}
	before := snapshot(t, w.a, w.sandA)
	must(t, w.a.plane.EnsureNetwork(Network{ID: "net", VNI: 4200, HostAddr: w.hostAddrA}))
	must(t, w.a.plane.Attach(attA))
	w.program(t)
	must(t, w.a.plane.Cleanup(map[uint32]bool{4200: true}, map[string]bool{"task-a": true}))
	if after := snapshot(t, w.a, w.sandA); after != before {
		t.Errorf("calling everything again changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	serve(t, w.sandB, port(w.taskB, 7000), "task-b")
	reaches(t, w.sandA, port(w.taskB, 7000), "task-b")
}

func TestCleanupAfterRestart(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	sb1, sb2, sb3 := newNetNS(t, "sb1"), newNetNS(t, "sb2"), newNetNS(t, "sb3")
	must(t, hst.plane.EnsureNetwork(Network{VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}))
	must(t, hst.plane.EnsureNetwork(Network{VNI: 4097, HostAddr: mustPrefix("198.19.201.1/24")}))
	for _, att := range []Attachment{
		{TaskID: "kept", VNI: 4096, NetNSPath: sb1, Addr: mustPrefix("198.19.200.10/24")},
		{TaskID: "kept", VNI: 4097, NetNSPath: sb1, Addr: mustPrefix("198.19.201.10/24"), IfName: "eth1"},
		{TaskID: "gone", VNI: 4096, NetNSPath: sb2, Addr: mustPrefix("198.19.200.20/24")},
		{TaskID: "gone2", VNI: 4097, NetNSPath: sb3, Addr: mustPrefix("198.19.201.30/24")},
	} {
		must(t, hst.plane.Attach(att))
	}
	// Not ours, though on our bridge's name space's edge: left alone.
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "other0"
	must(t, hst.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "other1"}))

	// The agent restarts: a new Plane over the same namespace.
	must(t, hst.plane.Close())
	restarted := newPlane(t, Config{VTEP: hst.vtep, NetNSPath: hst.ns})
	if got, err := restarted.Networks(); err != nil || !slices.Equal(got, []uint32{4096, 4097}) {
		t.Fatalf("Networks() after restart = %v, %v", got, err)
	}
	must(t, restarted.Cleanup(map[uint32]bool{4096: true}, map[string]bool{"kept": true}))
	want := []string{"sk-br-4096", restarted.names.veth("kept", 4096), "sk-vx-4096"}
	slices.Sort(want)
	if got := ourLinks(t, hst); !slices.Equal(got, want) {
		t.Errorf("after Cleanup: %v, want %v", got, want)
	}
	if got := isolationComments(t, hst); !slices.Equal(got, []string{"skiff: isolate sk-br-4096"}) {
		t.Errorf("isolation rules after Cleanup: %q", got)
	}
	for _, name := range []string{"other0", "other1"} {
		if _, err := hst.h.LinkByName(name); err != nil {
			t.Errorf("Cleanup removed %s, which is not the Plane's: %v", name, err)
		}
	}

	must(t, restarted.Cleanup(nil, nil))
	if got := ourLinks(t, hst); len(got) != 0 {
		t.Errorf("after Cleanup of everything: %v", got)
	}
	if tableExists(t, hst) {
		t.Error("isolation table left after Cleanup of everything")
	}
}
