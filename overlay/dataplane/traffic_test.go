package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// crossWorld is two hosts sharing network 4200, with one task on each,
// and the neighbours programmed as the agent would from gossip: each host
// knows the other's task and the other's own address in the network.
type crossWorld struct {
	a, b             *host
	sandA, sandB     string
	taskA, taskB     netip.Prefix
	hostAddrA, hostB netip.Prefix
}

func newCrossWorld(t *testing.T) *crossWorld {
	t.Helper()
	hosts := newHosts(t, 2, 1500)
	w := &crossWorld{
		a: hosts[0], b: hosts[1],
		sandA: newNetNS(t, "sb-a"), sandB: newNetNS(t, "sb-b"),
		taskA: mustPrefix("198.19.210.10/24"), taskB: mustPrefix("198.19.210.20/24"),
		hostAddrA: mustPrefix("198.19.210.1/24"), hostB: mustPrefix("198.19.210.2/24"),
	}
	must(t, w.a.plane.EnsureNetwork(Network{ID: "net", VNI: 4200, HostAddr: w.hostAddrA}))
	must(t, w.b.plane.EnsureNetwork(Network{ID: "net", VNI: 4200, HostAddr: w.hostB}))
	must(t, w.a.plane.Attach(Attachment{TaskID: "task-a", VNI: 4200, NetNSPath: w.sandA, Addr: w.taskA}))
	must(t, w.b.plane.Attach(Attachment{TaskID: "task-b", VNI: 4200, NetNSPath: w.sandB, Addr: w.taskB}))
	w.program(t)
	return w
}

func (w *crossWorld) program(t *testing.T) {
	t.Helper()
	must(t, w.a.plane.SetNeighbor(4200, w.taskB.Addr(), w.b.vtep))
	must(t, w.a.plane.SetNeighbor(4200, w.hostB.Addr(), w.b.vtep))
	must(t, w.b.plane.SetNeighbor(4200, w.taskA.Addr(), w.a.vtep))
	must(t, w.b.plane.SetNeighbor(4200, w.hostAddrA.Addr(), w.a.vtep))
}

func port(p netip.Prefix, n uint16) netip.AddrPort { return netip.AddrPortFrom(p.Addr(), n) }

func TestTrafficAcrossHosts(t *testing.T) {
	requireRoot(t)
	w := newCrossWorld(t)
	serve(t, w.sandB, port(w.taskB, 7000), "task-b")
	serve(t, w.sandA, port(w.taskA, 7000), "task-a")
	serve(t, w.b.ns, port(w.hostB, 7001), "host-b")

	// Task to task over VXLAN, both ways.
	reaches(t, w.sandA, port(w.taskB, 7000), "task-b")
	reaches(t, w.sandB, port(w.taskA, 7000), "task-a")
	// A host reaches its own task over the bridge, and a remote one.
	reaches(t, w.a.ns, port(w.taskA, 7000), "task-a")
	reaches(t, w.a.ns, port(w.taskB, 7000), "task-b")
	// A task reaches the other host's own address in the network (where
	// the embedded DNS listens): the bridge's MAC is derived like a task's.
	reaches(t, w.sandA, port(w.hostB, 7001), "host-b")

	// By now host A's bridge has learned task B's MAC on the VXLAN port;
	// that entry must not confuse DelNeighbor.
	must(t, w.a.plane.DelNeighbor(4200, w.taskB.Addr(), w.b.vtep))
	if mac, vtep := entries(t, w.a, 4200, w.taskB.Addr()); mac != "" || vtep.IsValid() {
		t.Errorf("after DelNeighbor: mac %q vtep %v; want none", mac, vtep)
	}
}

// TestTrafficMTU sends UDP datagrams that may not be fragmented: the
// largest that fits the overlay MTU crosses the tunnel, one byte more is
// refused by the sender.
func TestTrafficMTU(t *testing.T) {
	requireRoot(t)
	w := newCrossWorld(t)
	const fits = 1450 - 20 - 8 // overlay MTU less the inner IPv4 and UDP headers

	var rx *net.UDPConn
	must(t, inNS(w.sandB, func() (err error) {
		rx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(port(w.taskB, 7002)))
		return err
	}))
	t.Cleanup(func() { rx.Close() })
	var tx *net.UDPConn
	must(t, inNS(w.sandA, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(port(w.taskB, 7002)))
		return err
	}))
	t.Cleanup(func() { tx.Close() })
	raw, err := tx.SyscallConn()
	must(t, err)
	var sockErr error
	must(t, raw.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	}))
	must(t, sockErr)

	if _, err := tx.Write(make([]byte, fits+1)); !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("sending %d bytes: %v, want message too long", fits+1, err)
	}
	// The first datagram may wait for nothing: neighbours are static. Poll
	// anyway, in case the receiver is not yet reading.
	buf := make([]byte, 65536)
	deadline := time.Now().Add(waitFor)
	for {
		_, err := tx.Write(make([]byte, fits))
		must(t, err)
		rx.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := rx.Read(buf)
		if err == nil {
			if n != fits {
				t.Fatalf("received %d bytes, sent %d", n, fits)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a %d-byte datagram never crossed: %v", fits, err)
		}
	}
}

// TestIsolation puts two networks on one host that forwards IPv4, and a
// task on each with a route to the other's subnet through the host, which
// is the most a task can do to reach another network. The host must
// refuse to route between them, while traffic within each network flows.
func TestIsolation(t *testing.T) {
	requireRoot(t)
	hst := newHosts(t, 1, 1500)[0]
	setSysctl(t, hst.ns, "net.ipv4.ip_forward", "1")
	net1 := Network{ID: "net1", VNI: 4101, HostAddr: mustPrefix("198.19.201.1/24")}
	net2 := Network{ID: "net2", VNI: 4102, HostAddr: mustPrefix("198.19.202.1/24")}
	must(t, hst.plane.EnsureNetwork(net1))
	must(t, hst.plane.EnsureNetwork(net2))
	a := Attachment{TaskID: "a", VNI: 4101, NetNSPath: newNetNS(t, "sb-a"), Addr: mustPrefix("198.19.201.10/24")}
	c := Attachment{TaskID: "c", VNI: 4101, NetNSPath: newNetNS(t, "sb-c"), Addr: mustPrefix("198.19.201.30/24")}
	b := Attachment{TaskID: "b", VNI: 4102, NetNSPath: newNetNS(t, "sb-b"), Addr: mustPrefix("198.19.202.20/24")}
	for _, att := range []Attachment{a, b, c} {
		must(t, hst.plane.Attach(att))
	}
	addRoute(t, a.NetNSPath, net2.HostAddr.Masked(), net1.HostAddr.Addr())
	addRoute(t, b.NetNSPath, net1.HostAddr.Masked(), net2.HostAddr.Addr())
	serve(t, a.NetNSPath, port(a.Addr, 7000), "a")
	serve(t, b.NetNSPath, port(b.Addr, 7000), "b")

	// Within a network: bridged, allowed.
	reaches(t, c.NetNSPath, port(a.Addr, 7000), "a")
	// Across networks on one host: refused, both ways.
	rejected(t, a.NetNSPath, port(b.Addr, 7000))
	rejected(t, b.NetNSPath, port(a.Addr, 7000))

	// Control: without the rules the same path works, so it is the rules
	// that isolate and not a broken route. EnsureNetwork puts them back.
	conn := nftConn(t, hst)
	conn.DelTable(hst.plane.isolationTable())
	must(t, conn.Flush())
	reaches(t, a.NetNSPath, port(b.Addr, 7000), "b")
	must(t, hst.plane.EnsureNetwork(net1))
	rejected(t, a.NetNSPath, port(b.Addr, 7000))
}
