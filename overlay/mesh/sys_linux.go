package mesh

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// pktinfoSupported says whether a wildcard UDP port can answer from the
// address each client wrote to (IP_PKTINFO).
const pktinfoSupported = true

// enablePktinfo is a net.ListenConfig.Control that asks for each
// datagram's destination address.
func enablePktinfo(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt IP_PKTINFO", serr)
}

// pktinfoDst returns the destination address of a datagram from its control
// messages, or the zero Addr if they hold none.
func pktinfoDst(oob []byte) netip.Addr {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO && len(m.Data) >= syscall.SizeofInet4Pktinfo {
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }:
			// addr is the header's destination, the address the client used.
			return netip.AddrFrom4([4]byte(m.Data[8:12]))
		}
	}
	return netip.Addr{}
}

// pktinfoSrc returns the control message that makes a datagram leave from
// a, or nil if a cannot be a source.
func pktinfoSrc(a netip.Addr) []byte {
	if !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
		return nil
	}
	b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
	// The header's layout (its length field) depends on the architecture,
	// so it is written through the struct, as golang.org/x/net does.
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = syscall.IPPROTO_IP
	h.Type = syscall.IP_PKTINFO
	h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
	pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
	pi.Spec_dst = a.As4()
	return b
}

// upstream is a flow's connected socket towards its backend.
type upstream struct {
	*net.UDPConn
	raw syscall.RawConn
}

func dialUpstream(backend netip.AddrPort) (upstream, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(backend))
	if err != nil {
		return upstream{}, err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return upstream{}, err
	}
	return upstream{UDPConn: c, raw: raw}, nil
}

// recv waits for one datagram and hands it to deliver, honouring the read
// deadline. It waits for readability first and takes a buffer from bufs only
// to read, so a flow waiting for its backend holds no buffer: a thousand
// idle flows cost a thousand small goroutines, not 64 MiB.
func (u upstream) recv(bufs *sync.Pool, deliver func([]byte)) error {
	var rerr error
	err := u.raw.Read(func(fd uintptr) bool {
		bp := bufs.Get().(*[]byte)
		defer bufs.Put(bp)
		for {
			n, err := syscall.Read(int(fd), *bp)
			switch err {
			case nil:
				deliver((*bp)[:n])
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // not readable yet: RawConn waits in the poller
			default:
				rerr = os.NewSyscallError("read", err)
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return rerr
}
