package dns

import (
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// ednsUDPSize is the UDP payload size the server advertises to EDNS
// clients: the DNS flag day 2020 value, which avoids IP fragmentation.
const ednsUDPSize = 1232

// serveDNS answers one query: from the table when the name is the
// network's, else from an upstream.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	tcp := isTCP(w.RemoteAddr())
	resp := s.answer(req, querier(w.RemoteAddr()))
	if resp == nil {
		resp = s.forward(req, tcp)
	}
	fit(resp, req, tcp)
	if err := w.WriteMsg(resp); err != nil {
		s.logger.Debug("cannot write dns answer", "client", w.RemoteAddr().String(), "error", err)
	}
}

// answer returns the server's own answer to req, or nil if the name is not
// the network's and the query must be forwarded.
func (s *Server) answer(req *dns.Msg, from netip.Addr) *dns.Msg {
	if req.Opcode != dns.OpcodeQuery {
		return reply(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return reply(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return nil
	}
	addrs := s.resolver.Lookup(s.network, from, q.Name)
	if len(addrs) == 0 {
		return nil
	}
	m := reply(req, dns.RcodeSuccess)
	m.Authoritative = true
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: s.ttl}
	for _, a := range addrs {
		// Other types of a known name get no records (NODATA), which
		// tells a client the name exists without sending it elsewhere.
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	// A fresh order per answer spreads clients that use the first address
	// over all the tasks (endpoint_mode dnsrr).
	rand.Shuffle(len(m.Answer), func(i, j int) { m.Answer[i], m.Answer[j] = m.Answer[j], m.Answer[i] })
	return m
}

// reply returns an empty response to req with rcode.
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	// The server recurses for the names it forwards; saying so keeps
	// stub resolvers from complaining.
	m.RecursionAvailable = true
	return m
}

// fit makes resp fit what the client can take: over UDP, 512 bytes or the
// size its EDNS option announces, with the TC bit set when records had to
// go, so the client retries over TCP.
func fit(resp, req *dns.Msg, tcp bool) {
	size := dns.MaxMsgSize
	if !tcp {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	}
	if req.IsEdns0() != nil && resp.IsEdns0() == nil {
		resp.SetEdns0(ednsUDPSize, false)
	}
	resp.Truncate(size)
}

// querier is the address a query came from: the querying endpoint.
func querier(a net.Addr) netip.Addr {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	}
	return ap.Addr().Unmap()
}

func isTCP(a net.Addr) bool {
	_, ok := a.(*net.TCPAddr)
	return ok
}
