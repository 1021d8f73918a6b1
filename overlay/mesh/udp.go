package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxDatagram holds any UDP payload (65,507 bytes over IPv4), so
	// nothing is ever truncated.
	maxDatagram = 64 << 10
	// oobSize holds one IP_PKTINFO control message.
	oobSize = 64
)

var errFlowLimit = errors.New("too many UDP flows open on this port")

// udpServer is a published UDP port. One socket receives every client's
// datagrams and sends every reply; each flow has its own connected socket
// towards its backend, so the kernel demultiplexes the replies.
type udpServer struct {
	*published
	conn *net.UDPConn
	// pktinfo is set when conn is bound to the IPv4 wildcard: replies must
	// then leave from the address the client wrote to, or a client on a
	// connected socket would drop them, and the kernel would otherwise pick
	// the source by route.
	pktinfo bool

	mu sync.Mutex
	// flows is nil once the port has closed.
	flows map[flowKey]*flow
}

// flowKey identifies a flow as conntrack would: the client's address and the
// host address it wrote to.
type flowKey struct {
	client netip.AddrPort
	local  netip.Addr
}

type flow struct {
	key     flowKey
	route   *route
	backend netip.AddrPort
	up      upstream
	// oob sets the source of replies to key.local, when pktinfo is in use.
	oob []byte
	// last is the UnixNano time of the last datagram either way. The read
	// loop stores it under udpServer.mu, which is what lets expire decide
	// without losing a datagram that arrives as the flow times out.
	last atomic.Int64
	// checked is when the read loop last found backend in the service's
	// set; only the read loop touches it.
	checked time.Time
}

func listenUDP(p *published) (*udpServer, error) {
	addr := netip.AddrPortFrom(p.m.cfg.ListenAddr, p.key.port)
	s := &udpServer{published: p, flows: make(map[flowKey]*flow)}
	var lc net.ListenConfig
	if pktinfoSupported && addr.Addr() == netip.IPv4Unspecified() {
		s.pktinfo = true
		lc.Control = enablePktinfo
	}
	pc, err := lc.ListenPacket(p.ctx, p.m.network("udp"), addr.String())
	if err != nil {
		return nil, err // already "listen udp4 0.0.0.0:53: bind: address already in use"
	}
	s.conn = pc.(*net.UDPConn)
	s.wg.Go(s.serve)
	return s, nil
}

func (s *udpServer) close() {
	s.cancel()
	s.conn.Close()
	s.mu.Lock()
	flows := s.flows
	s.flows = nil
	s.mu.Unlock()
	for _, f := range flows {
		f.up.Close()
	}
	s.wg.Wait()
}

// serve reads clients' datagrams and forwards each on its flow.
func (s *udpServer) serve() {
	buf := make([]byte, maxDatagram)
	oob := make([]byte, oobSize)
	var backoff time.Duration
	for {
		n, oobn, _, client, err := s.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = acceptBackoff(backoff)
			s.log.Warn("read failed; retrying", "err", err, "in", backoff)
			if !s.sleep(backoff) {
				return
			}
			continue
		}
		backoff = 0
		local := s.m.cfg.ListenAddr
		if s.pktinfo {
			local = pktinfoDst(oob[:oobn])
		}
		s.forward(flowKey{client: client, local: local}, buf[:n])
	}
}

func (s *udpServer) forward(k flowKey, p []byte) {
	f, err := s.flow(k)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			s.stats.rejected.Add(1)
			s.log.Debug("datagram dropped", "client", k.client, "err", err)
		}
		return
	}
	if _, err := f.up.Write(p); err != nil {
		// Typically ECONNREFUSED, reported for an earlier datagram's ICMP
		// port-unreachable: ending the flow lets the client's next datagram
		// pick another backend.
		s.m.holds.fail(f.backend)
		s.end(f, err.Error())
		return
	}
	s.stats.in.Add(uint64(len(p)))
}

// flow returns k's flow, opening one if there is none or if the one there
// should no longer be used.
func (s *udpServer) flow(k flowKey) (*flow, error) {
	now := time.Now()
	s.mu.Lock()
	if s.flows == nil {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	f := s.flows[k]
	if f != nil {
		f.last.Store(now.UnixNano())
	} else if len(s.flows) >= s.m.cfg.MaxUDPFlows {
		s.mu.Unlock()
		return nil, errFlowLimit
	}
	s.mu.Unlock()

	if f != nil {
		reason := s.stale(f, now)
		if reason == "" {
			return f, nil
		}
		s.end(f, reason)
	}
	return s.open(k, now)
}

// stale says why f should not carry another datagram, or "" if it may.
// Checking the backend set costs a Backends call, so a busy flow does it at
// most once per revalidate interval.
func (s *udpServer) stale(f *flow, now time.Time) string {
	if f.route != s.route.Load() {
		return "port retargeted"
	}
	if now.Sub(f.checked) < s.m.revalidate {
		return ""
	}
	f.checked = now
	if !slices.Contains(s.m.cfg.Backends(f.route.service), f.backend.Addr()) {
		return "backend left the service"
	}
	return ""
}

// open starts a flow for k towards the next backend and its relay
// goroutine. Only the read loop opens flows, so k cannot have gained one
// meanwhile.
func (s *udpServer) open(k flowKey, now time.Time) (*flow, error) {
	r := s.route.Load()
	var backend netip.AddrPort
	for ap := range s.candidates(s.m.cfg.Backends(r.service), r.target) {
		backend = ap
		break
	}
	if !backend.IsValid() {
		return nil, errNoBackends
	}
	up, err := dialUpstream(backend)
	if err != nil {
		return nil, fmt.Errorf("open a socket to %s: %w", backend, err)
	}
	f := &flow{key: k, route: r, backend: backend, up: up, checked: now}
	if s.pktinfo {
		f.oob = pktinfoSrc(k.local)
	}
	f.last.Store(now.UnixNano())

	s.mu.Lock()
	if s.flows == nil {
		s.mu.Unlock()
		up.Close()
		return nil, ErrClosed
	}
	s.flows[k] = f
	s.mu.Unlock()

	s.stats.opened.Add(1)
	s.stats.active.Add(1)
	s.log.Debug("flow opened", "client", k.client, "service", r.service, "backend", backend)
	s.wg.Go(func() { s.relay(f) })
	return f, nil
}

// relay sends f's backend's replies to its client until the flow ends. It
// also reaps the flow when idle: the read deadline is the idle deadline, so
// no separate timer or sweeper is needed.
func (s *udpServer) relay(f *flow) {
	idle := s.m.cfg.UDPIdleTimeout
	reply := func(p []byte) {
		f.last.Store(time.Now().UnixNano())
		if _, _, err := s.conn.WriteMsgUDPAddrPort(p, f.oob, f.key.client); err != nil {
			s.log.Debug("reply not sent", "client", f.key.client, "err", err)
			return
		}
		s.stats.out.Add(uint64(len(p)))
	}
	f.up.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
	for {
		err := f.up.recv(&s.m.bufs, reply)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if s.expire(f, idle) {
				s.end(f, "idle")
				return
			}
			f.up.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		case errors.Is(err, net.ErrClosed):
			return // ended by the read loop or by close
		default:
			// ECONNREFUSED: ICMP port-unreachable, nothing listens there.
			s.m.holds.fail(f.backend)
			s.end(f, err.Error())
			return
		}
	}
}

// expire removes f if it has been idle for the whole timeout. The read loop
// refreshes last under the same lock before using a flow, so a flow it is
// about to use is never expired.
func (s *udpServer) expire(f *flow, idle time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(time.Unix(0, f.last.Load())) < idle {
		return false
	}
	if s.flows[f.key] == f {
		delete(s.flows, f.key)
		s.stats.active.Add(-1)
	}
	return true
}

// end removes f, if still there, and closes its socket, which stops its
// relay. Either the read loop or the relay may end a flow, and both may try.
func (s *udpServer) end(f *flow, reason string) {
	s.mu.Lock()
	if s.flows[f.key] == f {
		delete(s.flows, f.key)
		s.stats.active.Add(-1)
	}
	s.mu.Unlock()
	if f.up.Close() == nil {
		s.log.Debug("flow closed", "client", f.key.client, "backend", f.backend, "reason", reason)
	}
}
