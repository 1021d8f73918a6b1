package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// tlsHandshake is the first byte of every TLS connection: the content type
// of a handshake record, which carries the ClientHello. No memberlist
// stream starts with it: memberlist opens every stream with one of its
// message types (0 to 13 in v0.6.0, encryptMsg being 10 and compressMsg 9)
// or with its label header (244), so the byte alone tells a joining node's
// TLS connection from a member's stream on the same port.
const tlsHandshake = 0x16

// Limits of the transport.
const (
	// udpPacketSize is the largest UDP payload there is. Memberlist sends
	// packets of about 1400 bytes, but a peer may be configured otherwise,
	// and a packet cut short would fail decryption or decoding.
	udpPacketSize = 65536
	// udpRecvBuffer is the socket receive buffer asked for, as memberlist's
	// own transport does: gossip comes in bursts (a push/pull round, a
	// wave of broadcasts after a failure) and the kernel drops what does
	// not fit while the reader is busy.
	udpRecvBuffer = 2 << 20
	// peekTimeout bounds how long an accepted connection may stay silent
	// before its first byte. Both kinds of client write at once (a member
	// its message, a TLS client its ClientHello), so only a stalled or
	// hostile client waits this long.
	peekTimeout = 5 * time.Second
	// handoffTimeout bounds how long a connection waits for its reader:
	// memberlist, or whoever serves JoinListener. When no one serves joins
	// the connection is closed rather than kept open forever.
	handoffTimeout = 5 * time.Second
	// maxPending bounds the connections whose first byte has not arrived
	// yet. Each holds a goroutine and a file descriptor for up to
	// peekTimeout; past the bound new connections are closed at once, so a
	// flood of silent clients cannot exhaust either.
	maxPending = 256
	// bindAttempts is how many ports are tried when the port is 0: the
	// kernel picks a free TCP port, which may be taken for UDP.
	bindAttempts = 10
)

// transport is the pool's memberlist.Transport: UDP for packets and TCP for
// streams on one address and port, where a TCP connection that opens with
// a TLS handshake goes to the join listener instead of memberlist.
type transport struct {
	logger  *slog.Logger
	tcp     *net.TCPListener
	udp     *net.UDPConn
	ip      net.IP // bound address; unspecified when bound to all
	port    int
	packets chan *memberlist.Packet
	streams chan net.Conn
	join    *joinListener
	limits  transportLimits

	// done is closed by Shutdown; wg counts the listeners and the
	// goroutines routing accepted connections.
	done     chan struct{}
	wg       sync.WaitGroup
	shutdown sync.Once

	// pending are the accepted connections still waiting for their first
	// byte, closed by Shutdown so that it need not wait out peekTimeout.
	pendingMu sync.Mutex
	pending   map[net.Conn]struct{}
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// transportLimits are the transport's timeouts: peekTimeout and
// handoffTimeout outside tests.
type transportLimits struct {
	peek, handoff time.Duration
}

func defaultLimits() transportLimits {
	return transportLimits{peek: peekTimeout, handoff: handoffTimeout}
}

// newTransport listens on bindAddr (an IP; empty for every interface) and
// port, TCP and UDP. Port 0 picks a port free for both.
func newTransport(bindAddr string, port int, limits transportLimits, logger *slog.Logger) (*transport, error) {
	var ip net.IP
	if bindAddr != "" {
		if ip = net.ParseIP(bindAddr); ip == nil {
			return nil, fmt.Errorf("gossip bind address %q is not an IP address", bindAddr)
		}
	}
	t := &transport{
		logger:  logger,
		ip:      ip,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		limits:  limits,
		done:    make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
	if err := t.listen(port); err != nil {
		return nil, err
	}
	t.join = newJoinListener(t.tcp.Addr())
	t.wg.Add(2)
	go t.acceptLoop()
	go t.readLoop()
	return t, nil
}

// listen binds the TCP listener and the UDP socket to one port.
func (t *transport) listen(port int) error {
	attempts := 1
	if port == 0 {
		attempts = bindAttempts
	}
	var err error
	for range attempts {
		if err = t.bind(port); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", net.JoinHostPort(t.ip.String(), strconv.Itoa(port)), err)
	}
	if err := t.udp.SetReadBuffer(udpRecvBuffer); err != nil {
		// A smaller buffer only means more drops under bursts.
		t.logger.Debug("cannot enlarge the gossip UDP receive buffer", "error", err)
	}
	return nil
}

func (t *transport) bind(port int) error {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: t.ip, Port: port})
	if err != nil {
		return err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: t.ip, Port: port})
	if err != nil {
		tcp.Close()
		return err
	}
	t.tcp, t.udp, t.port = tcp, udp, port
	return nil
}

// FinalAdvertiseAddr returns the configured advertise address, or the bound
// one. Memberlist's own transport would guess a private address when bound
// to every interface; skiff always advertises an explicit address, so a
// missing one is a configuration error, not something to guess.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.port
	}
	if ip == "" {
		if t.ip == nil || t.ip.IsUnspecified() {
			return nil, 0, errors.New("gossip bound to every interface needs an advertise address")
		}
		return t.ip, port, nil
	}
	addr := net.ParseIP(ip)
	if addr == nil {
		return nil, 0, fmt.Errorf("gossip advertise address %q is not an IP address", ip)
	}
	// Memberlist compares addresses byte for byte: an IPv4 address must
	// be in its 4-byte form, as peers see it.
	if v4 := addr.To4(); v4 != nil {
		addr = v4
	}
	return addr, port, nil
}

// WriteTo sends a packet. The time is taken after the write returns, as
// close to the send as can be had, for memberlist's round-trip times.
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("resolve gossip peer %s: %w", addr, err)
	}
	if _, err := t.udp.WriteTo(b, to); err != nil {
		return time.Time{}, fmt.Errorf("send gossip packet to %s: %w", addr, err)
	}
	return time.Now(), nil
}

// WriteToAddress is WriteTo; the node's name does not change the route.
func (t *transport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, addr.Addr)
}

// PacketCh delivers the packets received.
func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a stream to a member.
func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial gossip peer %s: %w", addr, err)
	}
	return c, nil
}

// DialAddressTimeout is DialTimeout; the node's name does not change the
// route.
func (t *transport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(addr.Addr, timeout)
}

// StreamCh delivers the accepted streams that are memberlist's.
func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops listening, closes the join listener and every connection
// not yet handed on, and returns once the transport's goroutines have
// stopped. Memberlist calls it first thing in its own Shutdown, while its
// readers still run; the goroutines never wait for them past done anyway.
func (t *transport) Shutdown() error {
	t.shutdown.Do(func() {
		close(t.done)
		t.tcp.Close()
		t.udp.Close()
		t.join.Close()
		t.pendingMu.Lock()
		for c := range t.pending {
			c.Close()
		}
		t.pendingMu.Unlock()
		t.wg.Wait()
	})
	return nil
}

// closing reports whether Shutdown has begun, so that the errors it causes
// are not reported as failures.
func (t *transport) closing() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// readLoop hands every UDP packet to memberlist.
func (t *transport) readLoop() {
	defer t.wg.Done()
	buf := make([]byte, udpPacketSize)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		// The timestamp as soon as the read returns: memberlist measures
		// probe round trips from it.
		at := time.Now()
		if err != nil {
			if t.closing() {
				return
			}
			t.logger.Warn("gossip UDP read failed", "error", err)
			continue
		}
		if n < 1 {
			continue // every memberlist packet has at least a type byte
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: at}
		select {
		case t.packets <- p:
		case <-t.done:
			return
		}
	}
}

// acceptLoop accepts TCP connections and routes each on a goroutine of its
// own, so that a client that never sends its first byte holds up no one.
func (t *transport) acceptLoop() {
	defer t.wg.Done()
	var backoff time.Duration
	for {
		c, err := t.tcp.Accept()
		if err != nil {
			if t.closing() {
				return
			}
			// Out of file descriptors, most likely: pause rather than spin,
			// but not so long that Shutdown waits noticeably.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.logger.Warn("gossip TCP accept failed", "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-t.done:
				return
			}
			continue
		}
		backoff = 0
		if !t.track(c) {
			c.Close()
			continue
		}
		t.wg.Add(1)
		go t.route(c)
	}
}

// track records c as waiting for its first byte; it refuses once
// maxPending connections are waiting, or the transport is shutting down.
func (t *transport) track(c net.Conn) bool {
	t.pendingMu.Lock()
	defer t.pendingMu.Unlock()
	if t.closing() {
		return false
	}
	if len(t.pending) >= maxPending {
		t.logger.Warn("too many gossip connections silent after connecting; closing a new one", "from", c.RemoteAddr())
		return false
	}
	t.pending[c] = struct{}{}
	return true
}

func (t *transport) untrack(c net.Conn) {
	t.pendingMu.Lock()
	defer t.pendingMu.Unlock()
	delete(t.pending, c)
}

// route reads c's first byte and hands c, with the byte put back, to the
// join listener (a TLS handshake) or to memberlist (anything else).
func (t *transport) route(c net.Conn) {
	defer t.wg.Done()
	var first [1]byte
	_ = c.SetReadDeadline(time.Now().Add(t.limits.peek))
	_, err := c.Read(first[:])
	t.untrack(c)
	if err != nil {
		if !t.closing() {
			t.logger.Debug("gossip connection closed or silent before its first byte", "from", c.RemoteAddr(), "error", err)
		}
		c.Close()
		return
	}
	// Whoever reads the connection next sets the deadlines it needs:
	// memberlist its TCP timeout, the join server its handshake timeout.
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, first: first[0]}

	if first[0] == tlsHandshake {
		t.handoff(pc, t.join.conns, t.join.closed, "join listener")
	} else {
		t.handoff(pc, t.streams, nil, "memberlist")
	}
}

// handoff gives c to the reader of to, unless the reader has stopped
// (closed, nil for none), does not take it in time, or the transport shuts
// down: then c is closed.
func (t *transport) handoff(c net.Conn, to chan<- net.Conn, closed <-chan struct{}, reader string) {
	timer := time.NewTimer(t.limits.handoff)
	defer timer.Stop()
	select {
	case to <- c:
	case <-closed:
		c.Close()
	case <-timer.C:
		t.logger.Warn("no reader took a gossip-port connection in time; closing it", "from", c.RemoteAddr(), "reader", reader)
		c.Close()
	case <-t.done:
		c.Close()
	}
}

// peekedConn is a connection whose first byte was read to route it; Read
// returns that byte first.
type peekedConn struct {
	net.Conn
	mu     sync.Mutex
	first  byte
	peeked bool // first has been returned
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	if !c.peeked {
		c.peeked = true
		c.mu.Unlock()
		b[0] = c.first
		return 1, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// joinListener is the net.Listener of the TLS connections that arrive on
// the gossip port.
type joinListener struct {
	addr      net.Addr
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newJoinListener(addr net.Addr) *joinListener {
	return &joinListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept returns the next TLS connection, its first byte unread. Once the
// listener is closed it fails with an error wrapping net.ErrClosed.
func (l *joinListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, fmt.Errorf("gossip join listener: %w", net.ErrClosed)
	}
}

// Close stops Accept; TLS connections that arrive afterwards are closed.
// The gossip port stays open for memberlist.
func (l *joinListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr is the gossip port's TCP address.
func (l *joinListener) Addr() net.Addr { return l.addr }
