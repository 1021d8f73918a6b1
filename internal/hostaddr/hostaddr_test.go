package hostaddr

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeNetlink is a host's routes, links and addresses as Find reads them.
type fakeNetlink struct {
	routes []netlink.Route
	links  []netlink.Link
	addrs  map[string][]netlink.Addr
	// interrupted dumps fail with ErrDumpInterrupted before one succeeds.
	interrupted int
}

func (f *fakeNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	if family != netlink.FAMILY_V4 || mask&netlink.RT_FILTER_TABLE == 0 || filter.Table != unix.RT_TABLE_MAIN {
		return nil, fmt.Errorf("unexpected query: family %d, table %d, mask %#x", family, filter.Table, mask)
	}
	if f.interrupted > 0 {
		f.interrupted--
		return f.routes[:1], netlink.ErrDumpInterrupted
	}
	return f.routes, nil
}

func (f *fakeNetlink) LinkByIndex(index int) (netlink.Link, error) {
	for _, l := range f.links {
		if l.Attrs().Index == index {
			return l, nil
		}
	}
	return nil, errors.New("Link not found")
}

func (f *fakeNetlink) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return f.addrs[link.Attrs().Name], nil
}

func dummy(index int, name string) netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: index, Name: name}}
}

func addr(cidr string, scope int) netlink.Addr {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return netlink.Addr{IPNet: n, Scope: scope}
}

func cidr(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// defaultVia is a unicast default route out of link with metric prio, as
// netlink v1.3 reports it (Dst 0.0.0.0/0).
func defaultVia(link, prio int) netlink.Route {
	return netlink.Route{Dst: cidr("0.0.0.0/0"), LinkIndex: link, Priority: prio, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN}
}

func TestFind(t *testing.T) {
	links := []netlink.Link{dummy(1, "lo"), dummy(2, "eth0"), dummy(3, "wlan0"), dummy(4, "eth1")}
	addrs := map[string][]netlink.Addr{
		"lo": {addr("127.0.0.1/8", unix.RT_SCOPE_HOST)},
		// A link-scope address first: only a global one will do.
		"eth0":  {addr("169.254.7.7/16", unix.RT_SCOPE_LINK), addr("192.0.2.10/24", unix.RT_SCOPE_UNIVERSE), addr("192.0.2.11/24", unix.RT_SCOPE_UNIVERSE)},
		"wlan0": {addr("198.51.100.5/24", unix.RT_SCOPE_UNIVERSE)},
		"eth1":  {addr("203.0.113.9/24", unix.RT_SCOPE_UNIVERSE)},
	}
	linkDown := defaultVia(2, 0)
	linkDown.Flags = unix.RTNH_F_LINKDOWN
	olderNetlink := defaultVia(2, 100)
	olderNetlink.Dst = nil
	multipath := netlink.Route{
		Dst: cidr("0.0.0.0/0"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN,
		MultiPath: []*netlink.NexthopInfo{{LinkIndex: 3}, {LinkIndex: 2}},
	}
	for _, tc := range []struct {
		name      string
		routes    []netlink.Route
		want      string
		wantIface string
	}{
		{"one default route", []netlink.Route{defaultVia(2, 100)}, "192.0.2.10", "eth0"},
		{"the lowest metric wins", []netlink.Route{defaultVia(3, 600), defaultVia(2, 100)}, "192.0.2.10", "eth0"},
		{"other routes are not default ones", []netlink.Route{
			{Dst: cidr("203.0.113.0/24"), LinkIndex: 4, Type: unix.RTN_UNICAST},
			defaultVia(3, 600),
		}, "198.51.100.5", "wlan0"},
		{"a default route on a link that is down is passed over", []netlink.Route{linkDown, defaultVia(3, 600)}, "198.51.100.5", "wlan0"},
		{"an unreachable default route is passed over", []netlink.Route{
			{Dst: cidr("0.0.0.0/0"), Type: unix.RTN_UNREACHABLE, Priority: 0},
			defaultVia(4, 10),
		}, "203.0.113.9", "eth1"},
		{"a default route without a destination", []netlink.Route{olderNetlink}, "192.0.2.10", "eth0"},
		{"a multipath route leaves by its first hop", []netlink.Route{multipath}, "198.51.100.5", "wlan0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Find(&fakeNetlink{routes: tc.routes, links: links, addrs: addrs})
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if got.Addr != netip.MustParseAddr(tc.want) || got.Interface != tc.wantIface {
				t.Fatalf("Find = %v on %s, want %s on %s", got.Addr, got.Interface, tc.want, tc.wantIface)
			}
		})
	}
}

func TestFindFails(t *testing.T) {
	links := []netlink.Link{dummy(2, "eth0"), dummy(5, "tun0")}
	addrs := map[string][]netlink.Addr{
		"eth0": {addr("192.0.2.10/24", unix.RT_SCOPE_UNIVERSE)},
		"tun0": {addr("169.254.1.1/16", unix.RT_SCOPE_LINK), addr("2001:db8::1/64", unix.RT_SCOPE_UNIVERSE)},
	}
	_, err := Find(&fakeNetlink{links: links, addrs: addrs, routes: []netlink.Route{
		{Dst: cidr("192.0.2.0/24"), LinkIndex: 2, Type: unix.RTN_UNICAST},
		{Dst: cidr("0.0.0.0/0"), Type: unix.RTN_BLACKHOLE},
	}})
	if !errors.Is(err, ErrNoDefaultRoute) {
		t.Errorf("without a usable default route: %v, want ErrNoDefaultRoute", err)
	}
	_, err = Find(&fakeNetlink{links: links, addrs: addrs, routes: []netlink.Route{defaultVia(5, 0)}})
	if err == nil || !strings.Contains(err.Error(), "tun0, the default route's interface, has no global IPv4 address") {
		t.Errorf("with no global IPv4 address on the route's interface: %v", err)
	}
	_, err = Find(&fakeNetlink{links: links, addrs: addrs, routes: []netlink.Route{defaultVia(9, 0)}})
	if err == nil || !strings.Contains(err.Error(), "index 9") {
		t.Errorf("with the route's interface gone: %v", err)
	}
}

// TestFindRetriesInterruptedDumps: a dump the kernel interrupted because
// the routes changed meanwhile is partial, and taken again.
func TestFindRetriesInterruptedDumps(t *testing.T) {
	f := &fakeNetlink{
		links:       []netlink.Link{dummy(2, "eth0"), dummy(3, "wlan0")},
		addrs:       map[string][]netlink.Addr{"eth0": {addr("192.0.2.10/24", 0)}, "wlan0": {addr("198.51.100.5/24", 0)}},
		routes:      []netlink.Route{defaultVia(3, 600), defaultVia(2, 100)},
		interrupted: dumpAttempts - 1,
	}
	if got, err := Find(f); err != nil || got.Interface != "eth0" {
		t.Fatalf("after %d interrupted dumps: %v, %v; want eth0's address", dumpAttempts-1, got, err)
	}
	f.interrupted = dumpAttempts
	if _, err := Find(f); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("after %d interrupted dumps: %v, want ErrDumpInterrupted", dumpAttempts, err)
	}
}

func TestAdvertise(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	never := func() (Address, error) {
		t.Fatal("an address was looked for although one was given")
		return Address{}, nil
	}
	if got, err := advertise("198.18.0.1", never, logger); err != nil || got != "198.18.0.1" {
		t.Errorf("with --advertise-addr: %q, %v", got, err)
	}
	found := func() (Address, error) {
		return Address{Addr: netip.MustParseAddr("192.0.2.10"), Interface: "eth0"}, nil
	}
	if got, err := advertise("", found, logger); err != nil || got != "192.0.2.10" {
		t.Errorf("from the default route: %q, %v", got, err)
	}
	noRoute := func() (Address, error) { return Address{}, ErrNoDefaultRoute }
	_, err := advertise("", noRoute, logger)
	if err == nil || !strings.Contains(err.Error(), "no IPv4 default route") || !strings.Contains(err.Error(), "pass --advertise-addr") {
		t.Errorf("without a default route: %v", err)
	}
	netlinkErr := errors.New("operation not permitted")
	_, err = advertise("", func() (Address, error) { return Address{}, netlinkErr }, logger)
	if !errors.Is(err, netlinkErr) || !strings.Contains(err.Error(), "pass --advertise-addr") {
		t.Errorf("when the routes cannot be read: %v", err)
	}
}
