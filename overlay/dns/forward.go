package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// HostUpstreams returns the nameservers of a resolv.conf (the host's is
// /etc/resolv.conf) as host:port, for Config.Upstreams. The agent runs in
// the host's network namespace, so a local stub resolver such as
// systemd-resolved's 127.0.0.53 is reachable and fine to use.
func HostUpstreams(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nameservers from %s: %w", path, err)
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out, nil
}

// forward asks the upstreams in order, over the transport the client used,
// and relays the first answer, whatever its rcode. When none answers the
// client gets REFUSED, at once rather than at its own timeout, so it can
// try its next nameserver.
func (s *Server) forward(req *dns.Msg, tcp bool) *dns.Msg {
	if len(s.upstreams) == 0 {
		return reply(req, dns.RcodeRefused)
	}
	c := &dns.Client{Net: "udp", Timeout: s.upstreamTimeout}
	if tcp {
		c.Net = "tcp"
	}
	// A fresh ID per forwarded query, so an upstream's late answer to an
	// earlier attempt cannot be taken for this one.
	q := req.Copy()
	q.Id = dns.Id()
	for _, up := range s.upstreams {
		ctx, cancel := context.WithTimeout(s.ctx, s.upstreamTimeout)
		resp, _, err := c.ExchangeContext(ctx, q, up)
		cancel()
		if err != nil {
			s.logger.Debug("upstream resolver did not answer", "upstream", up, "name", questionName(req), "error", err)
			continue
		}
		resp.Id = req.Id
		return resp
	}
	s.logger.Debug("no upstream resolver answered; refusing", "name", questionName(req))
	return reply(req, dns.RcodeRefused)
}

func questionName(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return ""
	}
	return m.Question[0].Name
}

// normalizeUpstreams turns upstreams into host:port, adding port 53 to bare
// addresses, and drops self, the server's own address, so that a forwarded
// query can never come back to the server.
func normalizeUpstreams(upstreams []string, self netip.AddrPort) ([]string, error) {
	var out []string
	for _, u := range upstreams {
		if a, err := netip.ParseAddr(u); err == nil {
			u = netip.AddrPortFrom(a, 53).String()
		}
		host, port, err := net.SplitHostPort(u)
		if err != nil {
			return nil, fmt.Errorf("upstream resolver %q: %w", u, err)
		}
		if ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port)); err == nil && ap.Addr().Unmap() == self.Addr() && ap.Port() == self.Port() {
			continue
		}
		out = append(out, u)
	}
	return out, nil
}
