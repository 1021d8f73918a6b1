package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// serveSource answers every TCP connection to addr, inside the namespace at
// path, with the address the connection came from: what the far end of an
// egress sees.
func serveSource(tb testing.TB, path string, addr netip.AddrPort) {
	tb.Helper()
	serveWith(tb, path, addr, func(c net.Conn) string {
		return c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
	})
}

// TestEgress: a task with a gateway reaches an address outside the cluster
// through its host, masqueraded behind the host's underlay address; a task
// of an internal network cannot, not even with a route of its own; traffic
// to another host's task stays on the overlay with the task's own address;
// and the rules go with the last network.
func TestEgress(t *testing.T) {
	requireRoot(t)
	hosts := newHosts(t, 2, 1500)
	a, b := hosts[0], hosts[1]
	// Host b's underlay address stands for the world outside the cluster:
	// host a reaches it over the underlay, and its tasks have no other
	// way to it than through host a.
	outside := netip.AddrPortFrom(b.vtep, 7100)
	serveSource(t, b.ns, outside)

	open := Network{ID: "open", VNI: 4301, HostAddr: mustPrefix("198.19.230.1/24")}
	sealed := Network{ID: "sealed", VNI: 4302, HostAddr: mustPrefix("198.19.231.1/24"), Internal: true}
	must(t, a.plane.EnsureNetwork(open))
	must(t, a.plane.EnsureNetwork(sealed))
	must(t, b.plane.EnsureNetwork(Network{ID: "open", VNI: 4301, HostAddr: mustPrefix("198.19.230.2/24")}))

	task := Attachment{TaskID: "t", VNI: 4301, NetNSPath: newNetNS(t, "sb-t"), Addr: mustPrefix("198.19.230.10/24"), Gateway: open.HostAddr.Addr()}
	inner := Attachment{TaskID: "i", VNI: 4302, NetNSPath: newNetNS(t, "sb-i"), Addr: mustPrefix("198.19.231.10/24")}
	peer := Attachment{TaskID: "p", VNI: 4301, NetNSPath: newNetNS(t, "sb-p"), Addr: mustPrefix("198.19.230.20/24")}
	must(t, a.plane.Attach(task))
	must(t, a.plane.Attach(inner))
	must(t, b.plane.Attach(peer))
	must(t, a.plane.SetNeighbor(4301, peer.Addr.Addr(), b.vtep))
	must(t, b.plane.SetNeighbor(4301, task.Addr.Addr(), a.vtep))

	// Out, behind the host's address.
	reaches(t, task.NetNSPath, outside, a.vtep.String())
	// Across the overlay, with the task's own address.
	serveSource(t, peer.NetNSPath, port(peer.Addr, 7000))
	reaches(t, task.NetNSPath, port(peer.Addr, 7000), task.Addr.Addr().String())

	// Internal: no default route at all...
	if _, err := ask(inner.NetNSPath, outside, time.Second); !errors.Is(err, unix.ENETUNREACH) {
		t.Fatalf("from the internal network's task: %v, want network unreachable", err)
	}
	// ...and a route of the task's own making is refused by the host.
	addRoute(t, inner.NetNSPath, netip.MustParsePrefix("0.0.0.0/0"), sealed.HostAddr.Addr())
	rejected(t, inner.NetNSPath, outside)

	// The rules are the Plane's own table, and go with the last network.
	conn := nftConn(t, a)
	if !hasTable(t, conn, a.plane.egressTable()) {
		t.Fatal("no egress table while networks exist")
	}
	must(t, a.plane.RemoveNetwork(open.VNI))
	must(t, a.plane.RemoveNetwork(sealed.VNI))
	if hasTable(t, conn, a.plane.egressTable()) {
		t.Error("the egress table outlived the last network")
	}
}

// TestEgressRulesFollowTheDevices: a network's egress rule follows its
// bridge: rewritten when the network turns internal, and written again by
// SyncRules after someone else removed it.
func TestEgressRulesFollowTheDevices(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	n := Network{ID: "n", VNI: 4310, HostAddr: mustPrefix("198.19.240.1/24")}
	must(t, hst.plane.EnsureNetwork(n))
	conn := nftConn(t, hst)
	rules := func() []string {
		got, _, err := ruleComments(conn, hst.plane.egressTable(), egressNATChain, egressFilterChain)
		must(t, err)
		return got
	}
	if got, want := rules(), []string{"skiff: egress sk-br-4310 198.19.240.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("rules %q, want %q", got, want)
	}
	n.Internal = true
	must(t, hst.plane.EnsureNetwork(n))
	if got, want := rules(), []string{"skiff: internal sk-br-4310"}; !slices.Equal(got, want) {
		t.Fatalf("after internal: rules %q, want %q", got, want)
	}
	// Flushed by someone else (a firewall reload): SyncRules puts both
	// tables back.
	conn.DelTable(hst.plane.egressTable())
	conn.DelTable(hst.plane.isolationTable())
	must(t, conn.Flush())
	must(t, hst.plane.SyncRules())
	if got, want := rules(), []string{"skiff: internal sk-br-4310"}; !slices.Equal(got, want) {
		t.Fatalf("after a flush and SyncRules: rules %q, want %q", got, want)
	}
	if !hasTable(t, conn, hst.plane.isolationTable()) {
		t.Error("SyncRules did not put the isolation table back")
	}
}

func hasTable(t *testing.T, conn *nftables.Conn, table *nftables.Table) bool {
	t.Helper()
	tables, err := conn.ListTablesOfFamily(table.Family)
	must(t, err)
	return slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == table.Name })
}
