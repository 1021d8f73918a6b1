//go:build !linux

package mesh

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// pktinfoSupported is false here: a wildcard UDP port answers from the
// address the kernel picks.
const pktinfoSupported = false

func enablePktinfo(_, _ string, _ syscall.RawConn) error { return nil }

func pktinfoDst([]byte) netip.Addr { return netip.Addr{} }

func pktinfoSrc(netip.Addr) []byte { return nil }

// upstream is a flow's connected socket towards its backend. Off Linux each
// flow keeps its own buffer.
type upstream struct {
	*net.UDPConn
	buf []byte
}

func dialUpstream(backend netip.AddrPort) (upstream, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(backend))
	if err != nil {
		return upstream{}, err
	}
	return upstream{UDPConn: c, buf: make([]byte, maxDatagram)}, nil
}

func (u upstream) recv(_ *sync.Pool, deliver func([]byte)) error {
	n, err := u.Read(u.buf)
	if err != nil {
		return err
	}
	deliver(u.buf[:n])
	return nil
}
