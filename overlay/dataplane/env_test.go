package dataplane

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The tests build real hosts out of network namespaces, as root. Every
// address is in 198.18.0.0/15, away from the testbed's 198.18.0.0/24: the
// underlay is 198.18.200.0/24 and the overlays are in 198.19.200.0/21.

// waitFor bounds every poll: long enough for a loaded machine, and a poll
// ends as soon as it succeeds.
const waitFor = 10 * time.Second

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and devices")
	}
}

var nsSeq atomic.Int64

// newNetNS creates a named network namespace, deleted when the test ends,
// and returns its path.
func newNetNS(tb testing.TB, role string) string {
	tb.Helper()
	name := fmt.Sprintf("skdp-%d-%d-%s", os.Getpid(), nsSeq.Add(1), role)
	err := onThread(func() error {
		ns, err := netns.NewNamed(name)
		if err != nil {
			return err
		}
		return ns.Close()
	})
	if err != nil {
		tb.Fatalf("create network namespace %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			tb.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	return "/run/netns/" + name
}

// onThread runs fn on a goroutine locked to an OS thread of its own, and
// lets that thread die with the goroutine (it never unlocks): fn may leave
// the thread in another namespace without any other goroutine ever
// running there.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- fn()
	}()
	return <-errc
}

// inNS runs fn inside the namespace at path. Sockets fn opens stay in that
// namespace whatever goroutine uses them later.
func inNS(path string, fn func() error) error {
	return onThread(func() error {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter %s: %w", path, err)
		}
		return fn()
	})
}

// handleAt is an rtnetlink handle inside the namespace at path.
func handleAt(tb testing.TB, path string) *netlink.Handle {
	tb.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	return h
}

// host is a simulated machine: a namespace with an underlay link and a
// Plane.
type host struct {
	ns    string
	vtep  netip.Addr
	h     *netlink.Handle
	plane *Plane
}

// newHosts makes n hosts whose underlay links have the given MTU. Two
// hosts are joined by a veth pair, like two machines on one cable; a lone
// host's underlay is a veth whose other end stays with it (this kernel has
// no dummy links).
func newHosts(tb testing.TB, n, mtu int) []*host {
	tb.Helper()
	if n < 1 || n > 2 {
		tb.Fatalf("newHosts: %d hosts; want 1 or 2", n)
	}
	hosts := make([]*host, n)
	for i := range hosts {
		path := newNetNS(tb, fmt.Sprintf("h%d", i+1))
		hosts[i] = &host{ns: path, vtep: netip.AddrFrom4([4]byte{198, 18, 200, byte(i + 1)}), h: handleAt(tb, path)}
	}
	peerHost := hosts[n-1]
	peer, err := netns.GetFromPath(peerHost.ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer peer.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ul0"
	attrs.MTU = mtu
	peerName := "ul0"
	if n == 1 {
		peerName = "ul0-end"
	}
	ul := &netlink.Veth{LinkAttrs: attrs, PeerName: peerName, PeerNamespace: netlink.NsFd(peer)}
	if err := hosts[0].h.LinkAdd(ul); err != nil {
		tb.Fatalf("create underlay: %v", err)
	}
	if n == 1 {
		end, err := peerHost.h.LinkByName(peerName)
		if err != nil {
			tb.Fatal(err)
		}
		if err := peerHost.h.LinkSetUp(end); err != nil {
			tb.Fatal(err)
		}
	}
	for _, hst := range hosts {
		link, err := hst.h.LinkByName("ul0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(hst.vtep, 24))}
		if err := hst.h.AddrAdd(link, addr); err != nil {
			tb.Fatal(err)
		}
		if err := hst.h.LinkSetUp(link); err != nil {
			tb.Fatal(err)
		}
		hst.plane = newPlane(tb, Config{VTEP: hst.vtep, NetNSPath: hst.ns})
	}
	return hosts
}

func newPlane(tb testing.TB, cfg Config) *Plane {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// setSysctl writes a sysctl of the namespace at path.
func setSysctl(tb testing.TB, path, key, value string) {
	tb.Helper()
	err := inNS(path, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	})
	if err != nil {
		tb.Fatalf("sysctl %s=%s in %s: %v", key, value, path, err)
	}
}

// serve answers every TCP connection to addr, inside the namespace at
// path, with one line naming who answered.
func serve(tb testing.TB, path string, addr netip.AddrPort, name string) {
	tb.Helper()
	serveWith(tb, path, addr, func(net.Conn) string { return name })
}

// serveWith answers every TCP connection to addr, inside the namespace at
// path, with the line answer gives for it.
func serveWith(tb testing.TB, path string, addr netip.AddrPort, answer func(net.Conn) string) {
	tb.Helper()
	var l net.Listener
	err := inNS(path, func() (err error) {
		l, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		tb.Fatalf("listen on %v in %s: %v", addr, path, err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitFor))
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					fmt.Fprintf(c, "%s\n", answer(c))
				}
			}()
		}
	}()
}

// ask connects from inside the namespace at path to addr, sends a line and
// returns the answer.
func ask(path string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := inNS(path, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// reaches polls until a connection from the namespace at path to addr
// gets the answer want.
func reaches(tb testing.TB, path string, addr netip.AddrPort, want string) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got, err := ask(path, addr, time.Second)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("from %s to %v: got %q, %v; want %q", path, addr, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rejected checks that a connection from the namespace at path to addr is
// refused by the host at once with "no route to host", as the isolation
// rule's ICMP admin-prohibited makes it.
func rejected(tb testing.TB, path string, addr netip.AddrPort) {
	tb.Helper()
	got, err := ask(path, addr, waitFor)
	if !errors.Is(err, unix.EHOSTUNREACH) {
		tb.Fatalf("from %s to %v: got %q, %v; want no route to host", path, addr, got, err)
	}
}

// addRoute adds a route inside the namespace at path, as a task with
// CAP_NET_ADMIN could.
func addRoute(tb testing.TB, path string, dst netip.Prefix, via netip.Addr) {
	tb.Helper()
	h := handleAt(tb, path)
	err := h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: net.IP(via.AsSlice())})
	if err != nil {
		tb.Fatalf("route %v via %v in %s: %v", dst, via, path, err)
	}
}
