package agent

import (
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// managerConns keeps one client connection per manager, across sessions.
//
// Every connection is a mutual-TLS handshake, which costs the manager more
// CPU than anything else an agent asks of it. An agent registers with every
// manager at once (followers redirect, the leader accepts), so it already
// holds a connection to each survivor when the leader dies; keeping them
// means that a thousand agents moving to a new leader do it over
// connections that are already up, with no handshake at all. An idle
// connection costs a manager a socket and its buffers, which is cheap
// beside a thousand handshakes in the second a new leader most needs its
// CPU.
type managerConns struct {
	creds credentials.TransportCredentials

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newManagerConns(creds credentials.TransportCredentials) *managerConns {
	return &managerConns{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

// get returns the connection to the manager at addr, creating it (lazily:
// gRPC connects on the first call) if there is none.
func (c *managerConns) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("dial %s: the agent is stopping", addr)
	}
	if conn := c.conns[addr]; conn != nil {
		return conn, nil
	}
	conn, err := dial(addr, c.creds)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = conn
	return conn, nil
}

// retain closes the connections to managers other than those in addrs: a
// manager that left the cluster, or moved, should not hold a socket of
// every agent forever.
func (c *managerConns) retain(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, conn := range c.conns {
		if !slices.Contains(addrs, addr) {
			conn.Close()
			delete(c.conns, addr)
		}
	}
}

// drop closes the connection to the manager at addr, if there is one.
func (c *managerConns) drop(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn := c.conns[addr]; conn != nil {
		conn.Close()
		delete(c.conns, addr)
	}
}

// close closes every connection; get fails from then on.
func (c *managerConns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns, c.closed = nil, true
}
