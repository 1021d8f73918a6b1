// Package mesh is skiff's routing mesh: every host answers every published
// port of every service (a compose "4000:80") and forwards each TCP
// connection or UDP flow to a running task of that service, on whichever
// host the task runs.
//
// # Why a userspace proxy
//
// Docker Swarm builds its ingress mesh on IPVS inside a dedicated ingress
// network. The kernels skiff runs on may have no IPVS at all
// (/proc/sys/net/ipv4/vs is missing), so that design is not available. What
// is available is simpler: the agent runs in the host's network namespace,
// the host has an address on every overlay network's bridge, and the overlay
// carries packets to any task IP on any host. A proxy in the agent therefore
// needs nothing but sockets: it listens on the published port on all host
// addresses and dials the chosen task's IP and target port.
//
// The bytes of a TCP connection never enter user space: io.Copy between two
// *net.TCPConn is splice(2) on Linux. What the proxy costs is a second
// socket, its handshake and the kernel's work on the extra hop (see
// BenchmarkTCPThroughput and BenchmarkTCPConnect). As with Swarm's ingress,
// which SNATs, a task sees the mesh host's address on its network as the
// client's, not the real client's.
//
// A future in-kernel option is nftables: a prerouting DNAT to a remote task
// IP, balanced with numgen. It would save the extra hop, but it needs
// conntrack on the receiving host and the replies to come back through it
// (SNAT into the overlay, or routing the overlay through the host), and
// skipping dead backends would need active health checks instead of failed
// dials.
//
// # Balancing
//
// Each published port keeps a round-robin counter. A new TCP connection tries
// the backend the counter points at; if that one refuses, or has not
// answered within HedgeDelay, it tries the next beside it (each attempt
// bounded by DialTimeout), in an order that also rotates, so a dead
// backend's share is spread evenly over the rest instead of doubling its
// neighbour's. The first attempt to connect wins and the others are
// abandoned. A task on a host that just died drops the SYN rather than
// refusing it, and until gossip declares the host dead (a second or more)
// the hedge is what keeps that from costing a client a whole DialTimeout: it
// costs HedgeDelay, the way Happy Eyeballs (RFC 8305) races addresses. A
// backend that failed, or was still silent when another answered, is tried
// after the healthy ones for HoldDown. If no backend connects, the client
// connection is reset.
// Established connections stay where they are when the backend set changes,
// as with IPVS: one to a task that went away ends with the task's socket, or
// when TCP keepalive gives up on a dead host.
//
// A UDP flow is one (client address, host address) pair. Its first datagram
// picks a backend round-robin; the flow keeps it, with its own upstream
// socket, until the flow has been idle for UDPIdleTimeout, the backend
// leaves the service's set (checked at most once a second), or the backend
// answers with ICMP port-unreachable; the client's next datagram then opens
// a new flow. At most MaxUDPFlows flows are open per port; datagrams that
// would open more are dropped.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultDialTimeout    = 2 * time.Second
	DefaultHedgeDelay     = 250 * time.Millisecond
	DefaultHoldDown       = 5 * time.Second
	DefaultUDPIdleTimeout = 30 * time.Second // conntrack's nf_conntrack_udp_timeout
	DefaultMaxUDPFlows    = 1024
)

// Port is one published port of a service, in ingress mode.
type Port struct {
	// Protocol is "tcp" or "udp".
	Protocol string
	// Published is the port the mesh listens on, on every host.
	Published uint16
	// Target is the port the service's tasks listen on.
	Target uint16
	// Service is the service's full name (<stack>_<service>): what Backends
	// is asked about.
	Service string
}

// String formats p as docker does: "4000:80/tcp".
func (p Port) String() string {
	return fmt.Sprintf("%d:%d/%s", p.Published, p.Target, p.Protocol)
}

func (p Port) validate() error {
	switch {
	case p.Protocol != "tcp" && p.Protocol != "udp":
		return fmt.Errorf("protocol %q: want tcp or udp", p.Protocol)
	case p.Published == 0:
		return errors.New("no published port")
	case p.Target == 0:
		return errors.New("no target port")
	case p.Service == "":
		return errors.New("no service")
	}
	return nil
}

// portKey identifies a listener: a published port is shared by nothing
// else, whatever its target and service.
type portKey struct {
	proto string
	port  uint16
}

// route is where a port forwards to. It is replaced, never modified, so a
// connection that loaded it sees one consistent service and target.
type route struct {
	service string
	target  uint16
}

// Backends returns the IPs of the running tasks of a service, from the
// agent's endpoint table. The mesh calls it for every new TCP connection and
// UDP flow, and about once a second for each busy UDP flow, from many
// goroutines at once, so it must be safe for concurrent use, cheap and
// non-blocking. The mesh never modifies the slice; the
// addresses may come in any order (round-robin runs over them sorted) and
// should not repeat.
type Backends func(service string) []netip.Addr

// Config configures a Mesh. Only Backends is required.
type Config struct {
	// ListenAddr is the host address the published ports listen on. The
	// zero value means 0.0.0.0: every IPv4 address of the host.
	ListenAddr netip.Addr
	// Backends gives the tasks a port forwards to.
	Backends Backends
	// Logger receives per-port events at Info and per-connection events at
	// Debug; nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds each TCP connection attempt to one backend
	// (DefaultDialTimeout if zero).
	DialTimeout time.Duration
	// Spread is where each port's round robin starts. Hosts given different
	// values (a hash of the node's name, say) send their first connections
	// to different tasks, where with one start every host would pick the
	// same task first.
	Spread uint64
	// HedgeDelay is how long a TCP connection attempt may go unanswered
	// before the next backend is tried beside it (DefaultHedgeDelay if
	// zero; negative disables, so that backends are tried one at a time).
	HedgeDelay time.Duration
	// HoldDown is how long a backend that failed (a TCP dial, or ICMP
	// port-unreachable for UDP) is tried only after the others
	// (DefaultHoldDown if zero; negative disables).
	HoldDown time.Duration
	// UDPIdleTimeout is how long a UDP flow lives without a datagram in
	// either direction (DefaultUDPIdleTimeout if zero).
	UDPIdleTimeout time.Duration
	// MaxUDPFlows bounds the open UDP flows of each published port, and so
	// the sockets and goroutines a flood of clients can cost
	// (DefaultMaxUDPFlows if zero).
	MaxUDPFlows int
}

// PortError is the error for one port that Set could not publish. The other
// ports of the same Set are served regardless.
type PortError struct {
	Port Port
	Err  error
}

// Error names the port and its service, so the message can be shown to the
// user as it is.
func (e *PortError) Error() string {
	return fmt.Sprintf("publish %s for service %q: %v", e.Port, e.Port.Service, e.Err)
}

// Unwrap returns the cause, so errors.Is(err, syscall.EADDRINUSE) finds a
// port already bound by something else.
func (e *PortError) Unwrap() error { return e.Err }

// ErrClosed is returned by Set after Close.
var ErrClosed = errors.New("mesh: closed")

// Mesh serves the published ports of one host. Its methods are safe for
// concurrent use.
type Mesh struct {
	cfg   Config
	log   *slog.Logger
	holds *holdDown
	// bufs holds datagram buffers, so that idle UDP flows hold none.
	bufs sync.Pool
	// revalidate is how often a busy UDP flow checks that its backend is
	// still in the service's set; a field so tests can shorten it.
	revalidate time.Duration

	// mu serializes Set and Close, and guards servers.
	mu      sync.Mutex
	closed  bool
	servers map[portKey]server
}

// server is one published port's listener and everything it started.
type server interface {
	base() *published
	// close stops the listener, tears down its connections or flows and
	// returns once all of its goroutines have ended.
	close()
}

// New returns a Mesh serving no ports; Set gives it some. It panics if
// cfg.Backends is nil, which is a programming error.
func New(cfg Config) *Mesh {
	if cfg.Backends == nil {
		panic("mesh: Config.Backends is nil")
	}
	if !cfg.ListenAddr.IsValid() {
		cfg.ListenAddr = netip.IPv4Unspecified()
	}
	cfg.ListenAddr = cfg.ListenAddr.Unmap()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.HoldDown == 0 {
		cfg.HoldDown = DefaultHoldDown
	}
	if cfg.HedgeDelay == 0 {
		cfg.HedgeDelay = DefaultHedgeDelay
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if cfg.MaxUDPFlows <= 0 {
		cfg.MaxUDPFlows = DefaultMaxUDPFlows
	}
	m := &Mesh{
		cfg:        cfg,
		log:        cfg.Logger,
		holds:      newHoldDown(cfg.HoldDown),
		revalidate: time.Second,
		servers:    make(map[portKey]server),
	}
	m.bufs.New = func() any { b := make([]byte, maxDatagram); return &b }
	return m
}

// Set makes ports the complete set of published ports: it opens listeners
// for new ports, closes those of ports no longer listed (resetting their
// connections and flows) and points ports whose target or service changed
// at the new one, for new connections, without rebinding. Calling it again
// with the same ports changes nothing, and a port that failed before is
// tried again.
//
// The error joins a *PortError for each port that is invalid, listed twice
// with different targets, or cannot be bound (errors.Is(err,
// syscall.EADDRINUSE) when something else holds it); every other port is
// served regardless. When Set returns, removed ports are free to bind.
func (m *Mesh) Set(ports []Port) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}

	var errs []error
	want := make(map[portKey]Port, len(ports))
	order := make([]portKey, 0, len(ports)) // so errors come in the caller's order
	for _, p := range ports {
		if err := p.validate(); err != nil {
			errs = append(errs, &PortError{Port: p, Err: err})
			continue
		}
		k := portKey{p.Protocol, p.Published}
		if prev, dup := want[k]; dup {
			if prev != p {
				errs = append(errs, &PortError{Port: p, Err: fmt.Errorf("port already published as %s for service %q", prev, prev.Service)})
			}
			continue
		}
		want[k] = p
		order = append(order, k)
	}

	for k, s := range m.servers {
		if _, ok := want[k]; !ok {
			s.close()
			delete(m.servers, k)
			m.log.Info("published port closed", "port", s.base().name)
		}
	}
	for _, k := range order {
		p := want[k]
		r := &route{service: p.Service, target: p.Target}
		if s, ok := m.servers[k]; ok {
			if s.base().setRoute(r) {
				m.log.Info("published port retargeted", "port", s.base().name, "target", p.Target, "service", p.Service)
			}
			continue
		}
		s, err := m.listen(k, r)
		if err != nil {
			errs = append(errs, &PortError{Port: p, Err: err})
			continue
		}
		m.servers[k] = s
		m.log.Info("published port opened", "port", s.base().name, "target", p.Target, "service", p.Service, "addr", netip.AddrPortFrom(m.cfg.ListenAddr, k.port))
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends, then closes the mesh. Set may be called before
// or during Run; ports are served from the moment Set returns.
func (m *Mesh) Run(ctx context.Context) error {
	<-ctx.Done()
	return m.Close()
}

// Close stops serving every port, resets their connections and flows, and
// returns once every goroutine of the mesh has ended. It is idempotent and
// always returns nil.
func (m *Mesh) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var wg sync.WaitGroup
	for _, s := range m.servers {
		wg.Go(s.close) // ports close independently; no need to wait on each in turn
	}
	wg.Wait()
	m.servers = nil
	return nil
}

func (m *Mesh) listen(k portKey, r *route) (server, error) {
	p := newPublished(m, k, r)
	var (
		s   server
		err error
	)
	switch k.proto {
	case "tcp":
		s, err = listenTCP(p)
	default:
		s, err = listenUDP(p)
	}
	if err != nil {
		p.cancel()
		return nil, err
	}
	return s, nil
}

// network returns "tcp4" or "udp4" (or the 6 variants) for the listen
// address, so a wildcard IPv4 listener never becomes dual-stack and client
// addresses never arrive IPv4-mapped.
func (m *Mesh) network(proto string) string {
	if m.cfg.ListenAddr.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// published is the state TCP and UDP ports share.
type published struct {
	m     *Mesh
	key   portKey
	name  string // "4000/tcp", for logs
	log   *slog.Logger
	route atomic.Pointer[route]
	rr    balancer
	stats stats

	// ctx ends when the port is closed; it aborts dials in progress.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts every goroutine the port started.
	wg sync.WaitGroup
}

func newPublished(m *Mesh, k portKey, r *route) *published {
	name := fmt.Sprintf("%d/%s", k.port, k.proto)
	p := &published{m: m, key: k, name: name, log: m.log.With("port", name)}
	p.rr.n.Store(m.cfg.Spread)
	p.route.Store(r)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

func (p *published) base() *published { return p }

// setRoute points the port at r, and reports whether that changed anything.
// An unchanged route keeps its pointer, so UDP flows, which compare
// pointers, survive an idempotent Set.
func (p *published) setRoute(r *route) bool {
	if *p.route.Load() == *r {
		return false
	}
	p.route.Store(r)
	return true
}

// sleep waits for d or until the port closes, and reports whether the port
// is still open.
func (p *published) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// acceptBackoff is how long to wait after a failed accept or read before
// trying again: failures such as EMFILE persist for a while, and retrying at
// once would spin.
func acceptBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}
