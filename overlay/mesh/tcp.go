package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/netip"
	"sync"
	"time"
)

// errNoBackends is why a connection or flow found nowhere to go.
var errNoBackends = errors.New("service has no running task")

// tcpServer is a published TCP port.
type tcpServer struct {
	*published
	ln *net.TCPListener

	mu sync.Mutex
	// conns holds both sockets of every connection, to reset them when the
	// port closes; nil once it has.
	conns map[*net.TCPConn]struct{}
}

func listenTCP(p *published) (*tcpServer, error) {
	var lc net.ListenConfig
	addr := netip.AddrPortFrom(p.m.cfg.ListenAddr, p.key.port)
	ln, err := lc.Listen(p.ctx, p.m.network("tcp"), addr.String())
	if err != nil {
		return nil, err // already "listen tcp4 0.0.0.0:4000: bind: address already in use"
	}
	s := &tcpServer{published: p, ln: ln.(*net.TCPListener), conns: make(map[*net.TCPConn]struct{})}
	s.wg.Go(s.serve)
	return s, nil
}

func (s *tcpServer) close() {
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		abort(c)
	}
	s.wg.Wait()
}

func (s *tcpServer) serve() {
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = acceptBackoff(backoff)
			s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			if !s.sleep(backoff) {
				return
			}
			continue
		}
		backoff = 0
		if !s.track(c) {
			abort(c)
			return
		}
		s.wg.Go(func() { s.handle(c) })
	}
}

// track registers c to be reset when the port closes, and reports false if
// it already has.
func (s *tcpServer) track(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *tcpServer) untrack(c *net.TCPConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// handle proxies one client connection and closes it.
func (s *tcpServer) handle(client *net.TCPConn) {
	defer s.untrack(client)
	s.stats.opened.Add(1)
	s.stats.active.Add(1)
	defer s.stats.active.Add(-1)

	r := s.route.Load()
	backend, err := s.dial(r)
	if err != nil {
		if s.ctx.Err() == nil {
			s.stats.rejected.Add(1)
			s.log.Debug("connection rejected", "client", client.RemoteAddr(), "service", r.service, "err", err)
		}
		// A reset, not a FIN: the client must not mistake "nowhere to go"
		// for an empty answer.
		abort(client)
		return
	}
	defer s.untrack(backend)
	if !s.track(backend) {
		abort(client)
		abort(backend)
		return
	}
	s.log.Debug("connection proxied", "client", client.RemoteAddr(), "service", r.service, "backend", backend.RemoteAddr())
	in, out := splice(client, backend)
	s.stats.in.Add(uint64(in))
	s.stats.out.Add(uint64(out))
}

// dial connects to a backend of r: the balancer's first choice, then,
// whenever the latest attempt has been silent for HedgeDelay or one fails,
// the next beside those still trying. The first to connect wins; see the
// package doc.
func (s *tcpServer) dial(r *route) (*net.TCPConn, error) {
	backends := s.m.cfg.Backends(r.service)
	if len(backends) == 0 {
		return nil, errNoBackends
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	d := net.Dialer{Timeout: s.m.cfg.DialTimeout}
	type attempt struct {
		ap  netip.AddrPort
		c   net.Conn
		err error
	}
	results := make(chan attempt, len(backends))
	next, stop := iter.Pull(s.candidates(backends, r.target))
	defer stop()
	pending := map[netip.AddrPort]bool{}
	launch := func() bool {
		ap, ok := next()
		if !ok {
			return false
		}
		pending[ap] = true
		go func() {
			c, err := d.DialContext(ctx, "tcp", ap.String())
			results <- attempt{ap, c, err}
		}()
		return true
	}
	launch()
	hedge := time.NewTimer(s.m.cfg.HedgeDelay)
	defer hedge.Stop()
	if s.m.cfg.HedgeDelay < 0 {
		hedge.Stop()
	}
	var errs []error
	for len(pending) > 0 {
		select {
		case a := <-results:
			delete(pending, a.ap)
			if a.err == nil {
				s.m.holds.release(a.ap)
				// Those still trying were silent for a HedgeDelay at
				// least: treat them as failed, and close any that
				// connect after all.
				for ap := range pending {
					s.stats.dialFailures.Add(1)
					s.m.holds.fail(ap)
				}
				if n := len(pending); n > 0 {
					s.wg.Go(func() {
						for range n {
							if late := <-results; late.c != nil {
								late.c.Close()
							}
						}
					})
				}
				return a.c.(*net.TCPConn), nil
			}
			if s.ctx.Err() != nil {
				return nil, context.Cause(s.ctx)
			}
			s.stats.dialFailures.Add(1)
			s.m.holds.fail(a.ap)
			errs = append(errs, a.err)
			launch()
		case <-hedge.C:
			if launch() {
				hedge.Reset(s.m.cfg.HedgeDelay)
			}
		}
	}
	return nil, fmt.Errorf("none of %d tasks reachable: %w", len(backends), errors.Join(errs...))
}

// splice copies both ways between client and backend until both directions
// have ended, then closes both, and returns the bytes copied each way.
//
// Each direction is an io.Copy between two *net.TCPConn, which Linux runs as
// splice(2): the bytes stay in the kernel. Wrapping either conn (to count
// bytes, say) would hide ReadFrom/WriteTo and fall back to copying through
// a user-space buffer, which is why bytes are counted from io.Copy's result.
func splice(client, backend *net.TCPConn) (in, out int64) {
	var wg sync.WaitGroup
	wg.Go(func() { in = pipe(backend, client) })
	out = pipe(client, backend)
	wg.Wait()
	client.Close()
	backend.Close()
	return in, out
}

// pipe copies src to dst. At src's EOF it half-closes dst, so a peer that
// finished sending can still receive the answer. On an error it resets both:
// the other direction must stop too, and a peer must not mistake a broken
// stream for a complete one.
func pipe(dst, src *net.TCPConn) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		abort(src)
		abort(dst)
		return n
	}
	dst.CloseWrite()
	return n
}

// abort closes c with a reset (SO_LINGER 0) instead of a FIN.
func abort(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}
