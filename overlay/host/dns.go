package host

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/skiffhq/skiff/overlay/dns"
)

// dnsServers runs one embedded DNS server per network present on the host,
// on the host's address in that network.
type dnsServers struct {
	resolver  dns.Resolver
	upstreams []string
	logger    *slog.Logger

	mu      sync.Mutex
	servers map[string]*dns.Server
}

func newDNSServers(h *Host, upstreams []string, logger *slog.Logger) *dnsServers {
	if len(upstreams) == 0 {
		// A host without resolvers (the testbed's) forwards nowhere, and
		// the servers answer other names REFUSED.
		upstreams, _ = dns.HostUpstreams("/etc/resolv.conf")
	}
	return &dnsServers{resolver: dns.NewResolver(h.table), upstreams: upstreams, logger: logger, servers: map[string]*dns.Server{}}
}

// start runs the network's server on addr, replacing one on another
// address.
func (d *dnsServers) start(networkID string, addr netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.servers[networkID]; s != nil {
		if s.Addr().Addr() == addr {
			return
		}
		s.Close()
	}
	// The server lives until stop or closeAll; its context is not the
	// caller's, which may be a single request's.
	s, err := dns.Start(context.Background(), dns.Config{
		Addr: netip.AddrPortFrom(addr, 53), NetworkID: networkID, Resolver: d.resolver,
		Upstreams: d.upstreams, Logger: d.logger,
	})
	if err != nil {
		d.logger.Error("start embedded DNS", "network", networkID, "addr", addr, "error", err)
		return
	}
	d.servers[networkID] = s
}

func (d *dnsServers) stop(networkID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.servers[networkID]; s != nil {
		s.Close()
		delete(d.servers, networkID)
	}
}

func (d *dnsServers) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, s := range d.servers {
		s.Close()
		delete(d.servers, id)
	}
}
