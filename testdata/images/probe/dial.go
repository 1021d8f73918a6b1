package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// udpRetransmit is how long dial waits for a UDP reply before sending its
// datagram again: the first one may be lost while a path is still being set
// up, or arrive before the server listens.
const udpRetransmit = 250 * time.Millisecond

// runDial implements "probe dial tcp|udp ADDR MSG [-timeout D]".
func runDial(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of the whole exchange")
	pos, err := parseArgs(fs, args, 3)
	if err != nil {
		return err
	}
	network, addr, msg := pos[0], pos[1], []byte(pos[2])
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var reply []byte
	switch network {
	case "tcp":
		reply, err = exchangeTCP(ctx, addr, msg)
	case "udp":
		reply, err = exchangeUDP(ctx, addr, msg)
	default:
		return usageError(fmt.Sprintf("network %q: want tcp or udp", network))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", network, addr, err)
	}
	if _, err := fmt.Fprintf(out, "%s\n", reply); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

// exchangeTCP sends msg, closes its sending side and returns everything the
// server sends back until it closes the connection.
func exchangeTCP(ctx context.Context, addr string, msg []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if _, err := conn.Write(msg); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	// The half-close tells an echo server that the message is complete.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return nil, fmt.Errorf("close sending side: %w", err)
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		return nil, fmt.Errorf("read reply: %w", err)
	}
	return reply, nil
}

// exchangeUDP sends msg and returns the first datagram that comes back,
// sending msg again every udpRetransmit until ctx is done.
func exchangeUDP(ctx context.Context, addr string, msg []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	buf := make([]byte, maxDatagram)
	for {
		// A refusal reported by an earlier datagram's ICMP error can
		// surface here; it only means that nobody listened yet.
		if _, err := conn.Write(msg); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("send: %w", err)
		}
		conn.SetReadDeadline(retransmitDeadline(ctx))
		n, err := conn.Read(buf)
		switch {
		case err == nil:
			return buf[:n], nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("no reply: %w", ctx.Err())
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED):
			// Nothing yet, or nobody listening yet: send again.
		default:
			return nil, fmt.Errorf("read reply: %w", err)
		}
	}
}

// retransmitDeadline is when to give up waiting for one reply: after
// udpRetransmit, or when ctx expires if that comes first.
func retransmitDeadline(ctx context.Context) time.Time {
	next := time.Now().Add(udpRetransmit)
	if deadline, ok := ctx.Deadline(); ok && deadline.Before(next) {
		return deadline
	}
	return next
}
