package raftnode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/skiffhq/skiff/ca"
)

// TLS is what a member needs to speak Raft over mutual TLS: it accepts
// connections only from holders of a manager certificate of the cluster's
// CA, and dials a peer only if the peer proves to be one.
type TLS struct {
	// Pool holds the cluster's CA.
	Pool *x509.CertPool
	// Keypair is this manager's own certificate, which it presents both
	// when it accepts and when it dials. Renewing it in place takes effect
	// on the next connection; open ones keep theirs.
	Keypair *ca.Keypair
	// HandshakeTimeout bounds the handshake of an accepted connection, so
	// that a client that connects and says nothing is dropped. Zero means
	// the transport's I/O timeout.
	HandshakeTimeout time.Duration
}

// Transport settings, the same with and without TLS.
const (
	// transportMaxPool is how many idle connections to each peer are kept.
	transportMaxPool = 3
	// transportTimeout bounds each RPC's I/O and each dial, handshake
	// included.
	transportTimeout = 5 * time.Second
)

// raftALPN is the application protocol the Raft port speaks. The manager's
// API port presents the same manager certificate under the same server
// name, so without it a Raft address that points at the API port by
// mistake would pass the handshake and fail later on garbage; with it the
// handshake itself fails, on either port.
const raftALPN = "skiff-raft"

// validate reports credentials that could never make a working transport,
// before Open touches the disk. A nil t is plain TCP, and valid.
func (t *TLS) validate() error {
	switch {
	case t == nil:
		return nil
	case t.Pool == nil:
		return errors.New("raft TLS: no CA pool")
	case t.Keypair == nil:
		return errors.New("raft TLS: no certificate")
	}
	// Peers refuse any other role, so a member holding one could never
	// reach them; say so here instead of through their refusals.
	if id := t.Keypair.Identity(); id.Role != ca.RoleManager {
		return fmt.Errorf("raft TLS: the certificate is for %s; Raft needs a manager's", id)
	}
	return nil
}

// tlsStream is a raft.StreamLayer over mutual TLS between managers.
//
// Accept hands raft a connection whose handshake has not happened yet:
// raft's NetworkTransport accepts connections one at a time and serves each
// in its own goroutine, so a handshake inside Accept would let one slow or
// silent client hold up every peer behind it. The handshake runs instead on
// the connection's first Read or Write, in that goroutine, bounded by the
// handshake timeout.
type tlsStream struct {
	ln               net.Listener
	advertise        net.Addr
	server, client   *tls.Config
	handshakeTimeout time.Duration
	// ctx ends when the stream closes, which aborts handshakes and dials
	// under way instead of leaving them to their timeouts.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ raft.StreamLayer = (*tlsStream)(nil)

// newTLSStream listens on bindAddr. Peers are told to dial advertise, or
// the listener's own address when advertise is nil, which must be a
// concrete IP, as with raft's TCP transport.
func newTLSStream(bindAddr string, advertise *net.TCPAddr, t *TLS) (*tlsStream, error) {
	if t == nil {
		return nil, errors.New("raft TLS: no credentials")
	}
	if err := t.validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr().(*net.TCPAddr)
	}
	if advertise.IP == nil || advertise.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("advertise address %s is not one peers can dial", advertise)
	}
	server := ca.ServerConfig(t.Pool, t.Keypair, ca.RoleManager)
	server.NextProtos = []string{raftALPN}
	client := ca.ClientConfig(t.Pool, t.Keypair, ca.RoleManager)
	client.NextProtos = []string{raftALPN}
	timeout := t.HandshakeTimeout
	if timeout <= 0 {
		timeout = transportTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &tlsStream{
		ln: ln, advertise: advertise, server: server, client: client,
		handshakeTimeout: timeout, ctx: ctx, cancel: cancel,
	}, nil
}

// Accept implements net.Listener. The connection it returns shakes hands on
// first use; see tlsStream.
func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: tls.Server(c, s.server), ctx: s.ctx, timeout: s.handshakeTimeout}, nil
}

// Close implements net.Listener. It also ends pending handshakes and dials;
// connections raft already holds are raft's to close.
func (s *tlsStream) Close() error {
	s.cancel()
	return s.ln.Close()
}

// Addr implements net.Listener: the address peers dial.
func (s *tlsStream) Addr() net.Addr { return s.advertise }

// Dial implements raft.StreamLayer. The connection it returns has completed
// its handshake, and timeout covers the TCP connect and the handshake
// together, so a peer that accepts and then stalls cannot hold raft past
// it.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := s.ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(s.ctx, timeout)
	}
	defer cancel()
	d := tls.Dialer{Config: s.client}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", address, err)
	}
	return c, nil
}

// serverConn is an accepted connection that completes its server handshake
// on first use, within timeout, and is closed if the handshake fails, so a
// refused client learns of it at once and holds nothing.
type serverConn struct {
	*tls.Conn
	ctx     context.Context
	timeout time.Duration
	// shaken spares every Read and Write after the first a context and a
	// timer.
	shaken atomic.Bool
}

// Read implements net.Conn.
func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// Write implements net.Conn.
func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *serverConn) handshake() error {
	if c.shaken.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	err := c.Conn.HandshakeContext(ctx)
	if err == nil {
		c.shaken.Store(true)
		return nil
	}
	c.Conn.Close()
	if err == io.EOF {
		// A client that connected and left without a word (a port probe)
		// is no error: raft logs anything but a bare io.EOF as one.
		return io.EOF
	}
	return fmt.Errorf("raft TLS handshake with %s: %w", c.RemoteAddr(), err)
}
