package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/skiffhq/skiff/overlay"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config says where a Plane works and how it names what it makes.
type Config struct {
	// VTEP is this host's underlay address: the source of its VXLAN
	// packets, and where the other hosts send theirs. It must be an IPv4
	// address of a link in the Plane's namespace; that link's MTU is the
	// underlay MTU.
	VTEP netip.Addr
	// NetNSPath is the network namespace the Plane manages, such as
	// /run/netns/h1. Empty means the namespace of the thread that calls New,
	// which is what the agent wants: it runs in the host's namespace. Tests
	// give one namespace per simulated host.
	NetNSPath string
	// Prefix starts every device name; DefaultPrefix ("sk") when empty. It
	// is a lowercase letter and at most two more letters or digits, so that
	// every name fits the kernel's 15 bytes. Devices whose names start with
	// "<Prefix>-" belong to the Plane: Cleanup removes those it is not told
	// to keep.
	Prefix string
	// Logger receives a record of every change to the host; slog.Default()
	// when nil.
	Logger *slog.Logger
	// Firewall, when set, is opened while the Plane has networks and
	// closed when it has none: the host firewall's FORWARD chain, which on
	// a stock Docker host drops what is not accepted (overlay/hostfw).
	Firewall Firewall
}

// Firewall is a host firewall that must let the Plane's bridges forward.
type Firewall interface {
	Open() error
	Close() error
}

// Plane builds and tears down the overlay's devices in one network
// namespace. Its methods are safe for concurrent use; they are serialised,
// so that each one's look-then-change is not raced by another's.
type Plane struct {
	mu sync.Mutex

	vtep  netip.Addr
	mtu   int // of every overlay device
	names names
	log   *slog.Logger

	// ns is the managed namespace, held open for the Plane's life, and h
	// is an rtnetlink socket inside it.
	ns netns.NsHandle
	h  *netlink.Handle

	fw Firewall
}

// New opens the Plane's namespace and reads the underlay MTU from the link
// that holds cfg.VTEP. It changes nothing on the host; call Cleanup next.
func New(cfg Config) (*Plane, error) {
	if !cfg.VTEP.Is4() {
		return nil, fmt.Errorf("vtep %v: want an IPv4 address", cfg.VTEP)
	}
	nm, err := newNames(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Plane{vtep: cfg.VTEP, names: nm, log: log.With("component", "dataplane"), fw: cfg.Firewall}

	if cfg.NetNSPath == "" {
		p.ns, err = netns.Get()
	} else {
		p.ns, err = netns.GetFromPath(cfg.NetNSPath)
	}
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", cfg.NetNSPath, err)
	}
	// Only rtnetlink: the default would also open XFRM and netfilter
	// sockets that the Plane never uses.
	p.h, err = netlink.NewHandleAt(p.ns, unix.NETLINK_ROUTE)
	if err != nil {
		p.ns.Close()
		return nil, fmt.Errorf("open rtnetlink in network namespace %q: %w", cfg.NetNSPath, err)
	}

	link, err := p.linkOfAddr(cfg.VTEP)
	if err != nil {
		p.Close()
		return nil, err
	}
	underlayMTU := link.Attrs().MTU
	p.mtu = underlayMTU - overlay.Overhead
	// 576 is the least every IPv4 host must accept whole (RFC 791).
	if p.mtu < 576 {
		p.Close()
		return nil, fmt.Errorf("underlay %s has MTU %d: too small for VXLAN (needs %d + 576)",
			link.Attrs().Name, underlayMTU, overlay.Overhead)
	}
	p.log.Info("data plane ready", "vtep", cfg.VTEP, "underlay", link.Attrs().Name,
		"underlay_mtu", underlayMTU, "overlay_mtu", p.mtu, "netns", cfg.NetNSPath)
	return p, nil
}

// Close releases the Plane's namespace and netlink socket. It leaves every
// device in place: the overlay outlives the agent process, so that tasks
// keep their network while the agent restarts.
func (p *Plane) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h != nil {
		p.h.Close()
		p.h = nil
	}
	return p.ns.Close()
}

// MTU is the MTU of every overlay device: the underlay's less
// overlay.Overhead.
func (p *Plane) MTU() int { return p.mtu }

// linkOfAddr finds the link that holds addr.
func (p *Plane) linkOfAddr(addr netip.Addr) (netlink.Link, error) {
	addrs, err := dump(func() ([]netlink.Addr, error) { return p.h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses to find vtep %v: %w", addr, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			link, err := p.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("link %d holding vtep %v: %w", a.LinkIndex, addr, err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("vtep %v is not an address of any link in the namespace", addr)
}

// linkByName returns the named link, or nil if there is none.
func (p *Plane) linkByName(name string) (netlink.Link, error) {
	return linkByName(p.h, name)
}

func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	return link, nil
}

// linkList lists every link in the Plane's namespace.
func (p *Plane) linkList() ([]netlink.Link, error) {
	links, err := dump(p.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return links, nil
}

// deleteLink removes a link; one that is already gone is not an error.
func (p *Plane) deleteLink(link netlink.Link, why string) error {
	err := p.h.LinkDel(link)
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s %s: %w", link.Type(), link.Attrs().Name, err)
	}
	p.log.Info("deleted link", "link", link.Attrs().Name, "type", link.Type(), "why", why)
	return nil
}

// dumpAttempts bounds the retries of a netlink dump that the kernel
// interrupted because the table changed under it.
const dumpAttempts = 5

// dump runs a netlink dump again while the kernel reports it interrupted
// (NLM_F_DUMP_INTR): a concurrent change, by another process, can make
// one dump skip or repeat entries.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var v []T
		v, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return nil, err
}

// setMTU sets the link's MTU unless it is already right.
func (p *Plane) setMTU(h *netlink.Handle, link netlink.Link) error {
	if link.Attrs().MTU == p.mtu {
		return nil
	}
	if err := h.LinkSetMTU(link, p.mtu); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", p.mtu, link.Attrs().Name, err)
	}
	return nil
}

// setUp brings the link up unless it already is.
func setUp(h *netlink.Handle, link netlink.Link) error {
	if link.Attrs().Flags&unix.IFF_UP != 0 {
		return nil
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// setMaster enslaves link to master unless it already is.
func setMaster(h *netlink.Handle, link netlink.Link, master netlink.Link) error {
	if link.Attrs().MasterIndex == master.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(link, master.Attrs().Index); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", link.Attrs().Name, master.Attrs().Name, err)
	}
	return nil
}
