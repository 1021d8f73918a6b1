package hostaddr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestFindInNamespace builds a host's network in a namespace of its own,
// as root, and reads it through the kernel: the addresses are in
// 198.18.210.0/23, away from the testbed's 198.18.0.0/24.
func TestFindInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	h := newNamespace(t)

	if _, err := Find(h); !errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("a namespace without routes: %v, want ErrNoDefaultRoute", err)
	}

	uplink := addLink(t, h, "skhaddr0", "198.18.210.2/24", "198.18.210.3/24")
	if _, err := Find(h); !errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("with an address but no default route: %v, want ErrNoDefaultRoute", err)
	}
	addDefault(t, h, uplink, "198.18.210.1", 200)
	want := Address{Addr: netip.MustParseAddr("198.18.210.2"), Interface: "skhaddr0"}
	if got, err := Find(h); err != nil || got != want {
		t.Fatalf("Find = %v, %v; want %v", got, err, want)
	}

	// A second uplink with a lower metric is the one the kernel uses.
	backup := addLink(t, h, "skhaddr1", "198.18.211.2/24")
	addDefault(t, h, backup, "198.18.211.1", 100)
	want = Address{Addr: netip.MustParseAddr("198.18.211.2"), Interface: "skhaddr1"}
	if got, err := Find(h); err != nil || got != want {
		t.Fatalf("with a preferred second default route: %v, %v; want %v", got, err, want)
	}
}

// newNamespace creates a network namespace, deleted when the test ends,
// and returns a netlink handle inside it.
func newNamespace(t *testing.T) *netlink.Handle {
	t.Helper()
	name := fmt.Sprintf("skhaddr-%d", os.Getpid())
	errc := make(chan error, 1)
	go func() {
		// NewNamed moves the calling thread into the new namespace; the
		// thread stays locked, so it dies with this goroutine and no
		// other goroutine ever runs there.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(name)
		if err == nil {
			err = ns.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create network namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open network namespace %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// addLink adds an interface that is up and has a carrier, with addrs in
// that order: one end of a veth pair whose other end is up too (kernels
// without the dummy module have veth, which Docker needs).
func addLink(t *testing.T, h *netlink.Handle, name string, addrs ...string) netlink.Link {
	t.Helper()
	peer := name + "p"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	peerLink, err := h.LinkByName(peer)
	if err != nil {
		t.Fatalf("find %s: %v", peer, err)
	}
	if err := h.LinkSetUp(peerLink); err != nil {
		t.Fatalf("set %s up: %v", peer, err)
	}
	for _, a := range addrs {
		nlAddr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(link, nlAddr); err != nil {
			t.Fatalf("add %s to %s: %v", a, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
	return link
}

func addDefault(t *testing.T, h *netlink.Handle, link netlink.Link, gw string, metric int) {
	t.Helper()
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(gw), Priority: metric}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("add a default route via %s: %v", gw, err)
	}
}
