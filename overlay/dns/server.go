package dns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Defaults for Config.
const (
	// DefaultTTL is the TTL of the server's own answers; see the package
	// documentation for why it is short.
	DefaultTTL = 2 * time.Second
	// DefaultUpstreamTimeout bounds each attempt at an upstream resolver.
	// It is well under the 5 s a glibc client waits before retrying, so a
	// dead upstream costs a client a REFUSED, not its own timeout.
	DefaultUpstreamTimeout = 2 * time.Second
)

// shutdownTimeout bounds how long Close waits for queries in flight.
const shutdownTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Addr is where the server listens, over UDP and TCP: the host's
	// address in the network, port 53. Port 0 picks one free port for both
	// (for tests).
	Addr netip.AddrPort
	// NetworkID is the network whose names the server answers.
	NetworkID string
	// Resolver answers the network's names: NewResolver over the endpoint
	// table.
	Resolver Resolver
	// Upstreams are the resolvers other names are forwarded to, in order,
	// as host:port or a bare address (port 53); see HostUpstreams. With
	// none, other names are answered REFUSED. The server's own address is
	// skipped, so that a query can never loop.
	Upstreams []string
	// UpstreamTimeout bounds each attempt at an upstream. Zero means
	// DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// TTL is the TTL of the server's own answers, rounded down to whole
	// seconds. Zero means DefaultTTL.
	TTL    time.Duration
	Logger *slog.Logger
}

// Server is one network's DNS server on one host.
type Server struct {
	addr            netip.AddrPort
	network         string
	resolver        Resolver
	upstreams       []string
	upstreamTimeout time.Duration
	ttl             uint32
	logger          *slog.Logger

	udp, tcp *dns.Server
	// ctx bounds forwarded queries: it ends when the server stops.
	ctx    context.Context
	cancel context.CancelFunc

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error
}

// Start binds the server's UDP and TCP sockets and serves queries until ctx
// ends or Close is called. It returns once the server answers.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	switch {
	case !cfg.Addr.Addr().IsValid():
		return nil, errors.New("dns server: no listen address")
	case cfg.NetworkID == "":
		return nil, errors.New("dns server: no network")
	case cfg.Resolver == nil:
		return nil, errors.New("dns server: no resolver")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pc, l, err := listen(ctx, cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dns server for network %s: %w", cfg.NetworkID, err)
	}
	bound := l.Addr().(*net.TCPAddr).AddrPort()
	addr := netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	upstreams, err := normalizeUpstreams(cfg.Upstreams, addr)
	if err != nil {
		pc.Close()
		l.Close()
		return nil, fmt.Errorf("dns server for network %s: %w", cfg.NetworkID, err)
	}
	s := &Server{
		addr:            addr,
		network:         cfg.NetworkID,
		resolver:        cfg.Resolver,
		upstreams:       upstreams,
		upstreamTimeout: cmp.Or(cfg.UpstreamTimeout, DefaultUpstreamTimeout),
		ttl:             uint32(cmp.Or(cfg.TTL, DefaultTTL) / time.Second),
		logger:          logger.With("component", "dns", "network", cfg.NetworkID, "addr", addr.String()),
		stop:            make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)

	s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serveDNS)}
	s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serveDNS)}
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := s.serve(srv); err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Add(1)
	go s.watch(ctx)
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return nil, fmt.Errorf("dns server on %s: %w", addr, err)
	}
	s.logger.Info("dns server listening", "upstreams", upstreams)
	return s, nil
}

// serve runs srv in a goroutine of the server's and returns once it
// serves, or with the error that kept it from starting.
func (s *Server) serve(srv *dns.Server) error {
	started, done := make(chan struct{}), make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	var err error
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		if err = srv.ActivateAndServe(); err != nil {
			s.fail(err)
		}
	}()
	select {
	case <-started:
		return nil
	case <-done:
		return err
	}
}

// Addr returns the address the server listens on.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Close stops the server, waits for the queries in flight (at most the
// upstream timeout) and releases its sockets. It returns the first error
// the server met, if any. It is safe to call more than once.
func (s *Server) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
	return s.firstErr()
}

// watch shuts the server down when ctx ends or Close is called; it is the
// only place that does, so the two never race.
func (s *Server) watch(ctx context.Context) {
	defer s.wg.Done()
	select {
	case <-ctx.Done():
	case <-s.stop:
	}
	s.cancel()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		// A server that failed to start refuses to shut down, and has
		// nothing to shut down: its error is already recorded.
		if err := srv.ShutdownContext(shutdownCtx); err != nil && s.firstErr() == nil {
			s.fail(fmt.Errorf("shut down: %w", err))
		}
	}
	s.logger.Info("dns server stopped")
}

func (s *Server) fail(err error) {
	s.logger.Error("dns server failed", "error", err)
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *Server) firstErr() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// listen binds UDP and TCP on one address. With port 0 it looks for a port
// free for both, retrying when the TCP side of the UDP socket's port is
// taken.
func listen(ctx context.Context, addr netip.AddrPort) (net.PacketConn, net.Listener, error) {
	var lc net.ListenConfig
	attempts := 1
	if addr.Port() == 0 {
		attempts = 10
	}
	var err error
	for range attempts {
		var pc net.PacketConn
		pc, err = lc.ListenPacket(ctx, "udp", addr.String())
		if err != nil {
			return nil, nil, fmt.Errorf("listen on udp %s: %w", addr, err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		var l net.Listener
		l, err = lc.Listen(ctx, "tcp", net.JoinHostPort(addr.Addr().String(), strconv.Itoa(port)))
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, nil, fmt.Errorf("listen on tcp %s: %w", addr, err)
}
