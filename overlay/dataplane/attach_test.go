package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
)

// attachWorld is one host with one network and one sandbox.
type attachWorld struct {
	hst     *host
	sandbox string
	att     Attachment
}

func newAttachWorld(t *testing.T) *attachWorld {
	t.Helper()
	hst := newHosts(t, 1, 1500)[0]
	must(t, hst.plane.EnsureNetwork(Network{ID: "net1", VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}))
	sandbox := newNetNS(t, "sb")
	return &attachWorld{hst: hst, sandbox: sandbox, att: Attachment{
		TaskID: "q3x7pb2kd9aamr5wvlyz6e4tno", VNI: 4096, NetNSPath: sandbox, Addr: mustPrefix("198.19.200.10/24"),
	}}
}

// check verifies the attachment is complete and returns the indexes of
// the host end and the sandbox end.
func (w *attachWorld) check(t *testing.T, att Attachment) (hostIdx, peerIdx int) {
	t.Helper()
	ifName := att.IfName
	if ifName == "" {
		ifName = DefaultIfName
	}
	hostName := w.hst.plane.names.veth(att.TaskID, att.VNI)
	host, err := w.hst.h.LinkByName(hostName)
	if err != nil {
		t.Fatalf("host end %s: %v", hostName, err)
	}
	br, err := w.hst.h.LinkByName(w.hst.plane.names.bridge(att.VNI))
	must(t, err)
	if host.Attrs().MasterIndex != br.Attrs().Index || host.Attrs().MTU != 1450 || host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host end: master %d mtu %d up %v; want %d, 1450, up",
			host.Attrs().MasterIndex, host.Attrs().MTU, host.Attrs().Flags&net.FlagUp != 0, br.Attrs().Index)
	}
	if host.Attrs().Alias != vethAlias(att.TaskID, att.VNI) {
		t.Errorf("host end alias %q", host.Attrs().Alias)
	}
	sb := handleAt(t, att.NetNSPath)
	peer, err := sb.LinkByName(ifName)
	if err != nil {
		t.Fatalf("sandbox %s: %v", ifName, err)
	}
	if !bytes.Equal(peer.Attrs().HardwareAddr, overlay.MAC(att.Addr.Addr())) || peer.Attrs().MTU != 1450 || peer.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("sandbox %s: mac %s mtu %d up %v; want %s, 1450, up", ifName,
			peer.Attrs().HardwareAddr, peer.Attrs().MTU, peer.Attrs().Flags&net.FlagUp != 0, overlay.MAC(att.Addr.Addr()))
	}
	if got := addrsOf(t, sb, peer); !slices.Equal(got, []netip.Prefix{att.Addr}) {
		t.Errorf("sandbox %s addresses %v, want %v", ifName, got, att.Addr)
	}
	lo, err := sb.LinkByName("lo")
	must(t, err)
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("sandbox lo is down")
	}
	return host.Attrs().Index, peer.Attrs().Index
}

func TestAttachPlumbsSandbox(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	must(t, w.hst.plane.Attach(w.att))
	hostIdx, peerIdx := w.check(t, w.att)

	// Again: nothing is recreated.
	must(t, w.hst.plane.Attach(w.att))
	if h, p := w.check(t, w.att); h != hostIdx || p != peerIdx {
		t.Errorf("second Attach recreated the pair: indexes %d/%d, were %d/%d", h, p, hostIdx, peerIdx)
	}
}

func TestAttachCompletesHalfDone(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	must(t, w.hst.plane.Attach(w.att))
	hostIdx, peerIdx := w.check(t, w.att)

	host, _ := w.hst.h.LinkByIndex(hostIdx)
	must(t, w.hst.h.LinkSetNoMaster(host))
	must(t, w.hst.h.LinkSetDown(host))
	sb := handleAt(t, w.sandbox)
	peer, _ := sb.LinkByIndex(peerIdx)
	must(t, sb.LinkSetDown(peer))
	must(t, sb.AddrDel(peer, &netlink.Addr{IPNet: ipNet(w.att.Addr)}))
	must(t, sb.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(mustPrefix("198.19.200.99/24"))}))
	lo, _ := sb.LinkByName("lo")
	must(t, sb.LinkSetDown(lo))

	must(t, w.hst.plane.Attach(w.att))
	if h, p := w.check(t, w.att); h != hostIdx || p != peerIdx {
		t.Errorf("repair recreated the pair: indexes %d/%d, were %d/%d", h, p, hostIdx, peerIdx)
	}
}

func TestAttachRedoesForNewSandbox(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	must(t, w.hst.plane.Attach(w.att))

	// The task's sandbox was replaced: the veth must move to the new one.
	second := w.att
	second.NetNSPath = newNetNS(t, "sb2")
	must(t, w.hst.plane.Attach(second))
	w.check(t, second)
	if _, err := handleAt(t, w.sandbox).LinkByName("eth0"); err == nil {
		t.Error("the old sandbox still has eth0")
	}

	// A new address means a new MAC: redone too.
	third := second
	third.Addr = mustPrefix("198.19.200.11/24")
	must(t, w.hst.plane.Attach(third))
	w.check(t, third)
}

func TestAttachRedoesInterruptedCreation(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	must(t, w.hst.plane.Attach(w.att))
	hostIdx, _ := w.check(t, w.att)
	// An Attach that died before it set the alias.
	host, _ := w.hst.h.LinkByIndex(hostIdx)
	must(t, w.hst.h.LinkSetAlias(host, ""))

	must(t, w.hst.plane.Attach(w.att))
	if h, _ := w.check(t, w.att); h == hostIdx {
		t.Error("a veth without its alias was kept")
	}
}

func TestAttachLeavesForeignInterface(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	sb := handleAt(t, w.sandbox)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "eth0"
	must(t, sb.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "other"}))

	if err := w.hst.plane.Attach(w.att); err == nil {
		t.Fatal("Attach succeeded over a sandbox's own eth0")
	}
	if _, err := sb.LinkByName("eth0"); err != nil {
		t.Errorf("the sandbox's own eth0 is gone: %v", err)
	}
	if got := ourLinks(t, w.hst); !slices.Equal(got, []string{"sk-br-4096", "sk-vx-4096"}) {
		t.Errorf("links after a failed Attach: %v", got)
	}
}

func TestAttachNeedsNetwork(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	att := w.att
	att.VNI = 5000
	if err := w.hst.plane.Attach(att); err == nil {
		t.Fatal("Attach to a network that was never ensured succeeded")
	}
	for name, att := range map[string]Attachment{
		"no task":       {VNI: 4096, NetNSPath: w.sandbox, Addr: w.att.Addr},
		"no sandbox":    {TaskID: "t", VNI: 4096, Addr: w.att.Addr},
		"no address":    {TaskID: "t", VNI: 4096, NetNSPath: w.sandbox},
		"long ifname":   {TaskID: "t", VNI: 4096, NetNSPath: w.sandbox, Addr: w.att.Addr, IfName: "a-very-long-ifname"},
		"missing netns": {TaskID: "t", VNI: 4096, NetNSPath: "/run/netns/skdp-does-not-exist", Addr: w.att.Addr},
	} {
		if err := w.hst.plane.Attach(att); err == nil {
			t.Errorf("%s: Attach succeeded", name)
		}
	}
}

func TestDetachRemovesEveryNetworkOfTask(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	must(t, w.hst.plane.EnsureNetwork(Network{ID: "net2", VNI: 4097, HostAddr: mustPrefix("198.19.201.1/24")}))
	second := w.att
	second.VNI, second.IfName, second.Addr = 4097, "eth1", mustPrefix("198.19.201.10/24")
	otherSandbox := newNetNS(t, "sb-other")
	other := Attachment{TaskID: "othertask", VNI: 4096, NetNSPath: otherSandbox, Addr: mustPrefix("198.19.200.20/24")}
	for _, att := range []Attachment{w.att, second, other} {
		must(t, w.hst.plane.Attach(att))
		w.check(t, att)
	}

	for range 2 {
		must(t, w.hst.plane.Detach(w.att.TaskID))
		sb := handleAt(t, w.sandbox)
		for _, name := range []string{"eth0", "eth1"} {
			if _, err := sb.LinkByName(name); err == nil {
				t.Errorf("sandbox still has %s after Detach", name)
			}
		}
		want := []string{"sk-br-4096", "sk-br-4097", w.hst.plane.names.veth("othertask", 4096), "sk-vx-4096", "sk-vx-4097"}
		slices.Sort(want)
		if got := ourLinks(t, w.hst); !slices.Equal(got, want) {
			t.Errorf("links after Detach: %v, want %v", got, want)
		}
	}
	w.check(t, other)

	for range 2 {
		must(t, w.hst.plane.DetachNetwork("othertask", 4096))
	}
	if _, err := handleAt(t, otherSandbox).LinkByName("eth0"); err == nil {
		t.Error("sandbox still has eth0 after DetachNetwork")
	}
}

// TestAttachConcurrently attaches several tasks at once, as an agent
// starting many tasks does; run with -race.
func TestAttachConcurrently(t *testing.T) {
	requireRoot(t)
	w := newAttachWorld(t)
	const n = 8
	atts := make([]Attachment, n)
	for i := range atts {
		atts[i] = Attachment{TaskID: fmt.Sprintf("task%d", i), VNI: 4096, NetNSPath: newNetNS(t, fmt.Sprintf("sb%d", i)),
			Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, 200, byte(100 + i)}), 24)}
	}
	errs := make(chan error, n)
	for _, att := range atts {
		go func() { errs <- w.hst.plane.Attach(att) }()
	}
	for range n {
		must(t, <-errs)
	}
	for _, att := range atts {
		w.check(t, att)
	}
	serve(t, atts[0].NetNSPath, port(atts[0].Addr, 7000), "task0")
	reaches(t, atts[n-1].NetNSPath, port(atts[0].Addr, 7000), "task0")
}
