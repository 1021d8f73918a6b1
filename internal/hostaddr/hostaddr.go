// Package hostaddr finds the address a skiff daemon advertises when it is
// given no --advertise-addr: the first global IPv4 address of the interface
// the default route leaves by. On a host with one network, that is the
// address every other host reaches it at, and it is how `docker swarm init`
// picks its own.
package hostaddr

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoDefaultRoute is Find's error on a host without an IPv4 default
// route, where there is no interface to take an address from.
var ErrNoDefaultRoute = errors.New("this host has no IPv4 default route")

// Address is the address found, and the interface that holds it, which
// the daemons log so that a surprising choice is easy to trace.
type Address struct {
	Addr      netip.Addr
	Interface string
}

// Netlink is what Find reads of a network namespace; a *netlink.Handle is
// one, for the namespace it was opened in.
type Netlink interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	LinkByIndex(index int) (netlink.Link, error)
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
}

// Default is Find in the network namespace this process runs in.
func Default() (Address, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return Address{}, fmt.Errorf("open a netlink socket: %w", err)
	}
	defer h.Close()
	return Find(h)
}

// Find returns the first global IPv4 address of the interface the default
// route of the main table leaves by. With several default routes, the one
// the kernel prefers (the lowest metric) wins; routes that cannot carry
// traffic (unreachable, blackhole, or on a link that is down) are passed
// over.
func Find(nl Netlink) (Address, error) {
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return Address{}, fmt.Errorf("list the IPv4 routes: %w", err)
	}
	var best *netlink.Route
	for i := range routes {
		r := &routes[i]
		if !usableDefault(r) {
			continue
		}
		if best == nil || r.Priority < best.Priority {
			best = r
		}
	}
	if best == nil {
		return Address{}, ErrNoDefaultRoute
	}
	link, err := nl.LinkByIndex(linkIndex(best))
	if err != nil {
		return Address{}, fmt.Errorf("find the default route's interface (index %d): %w", linkIndex(best), err)
	}
	name := link.Attrs().Name
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return Address{}, fmt.Errorf("list the addresses of %s, the default route's interface: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet == nil || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		return Address{Addr: ip, Interface: name}, nil
	}
	return Address{}, fmt.Errorf("%s, the default route's interface, has no global IPv4 address", name)
}

// usableDefault says whether r is a default route that traffic can leave
// by.
func usableDefault(r *netlink.Route) bool {
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			return false
		}
	}
	return r.Type == unix.RTN_UNICAST && r.Flags&unix.RTNH_F_LINKDOWN == 0 && linkIndex(r) != 0
}

// linkIndex is the interface a route leaves by; a multipath route's is its
// first hop's.
func linkIndex(r *netlink.Route) int {
	if r.LinkIndex != 0 {
		return r.LinkIndex
	}
	for _, hop := range r.MultiPath {
		if hop != nil && hop.LinkIndex != 0 {
			return hop.LinkIndex
		}
	}
	return 0
}

// dumpAttempts bounds the retries of a netlink dump that the kernel
// interrupted because the table changed meanwhile (a DHCP renewal, say).
const dumpAttempts = 3

func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var out []T
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

// Advertise is the address a daemon advertises: given, when the user gave
// one, else the default route's, which it logs. On a host where there is
// none to take, the error tells the user to pass --advertise-addr.
func Advertise(given string, logger *slog.Logger) (string, error) {
	return advertise(given, Default, logger)
}

func advertise(given string, find func() (Address, error), logger *slog.Logger) (string, error) {
	if given != "" {
		return given, nil
	}
	a, err := find()
	if errors.Is(err, ErrNoDefaultRoute) {
		return "", errors.New("no --advertise-addr given, and this host has no IPv4 default route to take one from: " +
			"pass --advertise-addr IP, the address other hosts reach this one at")
	}
	if err != nil {
		return "", fmt.Errorf("no --advertise-addr given, and the default route's address cannot be used (%w): "+
			"pass --advertise-addr IP, the address other hosts reach this one at", err)
	}
	logger.Info("no --advertise-addr given: advertising the address of the default route's interface",
		"addr", a.Addr, "interface", a.Interface)
	return a.Addr.String(), nil
}
