package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
)

// maxDatagram is the largest UDP payload there is, so no datagram is cut.
const maxDatagram = 64 << 10

// runTCPEcho implements "probe tcp-echo ADDR".
func runTCPEcho(ctx context.Context, args []string, _ io.Writer) error {
	pos, err := parseArgs(flag.NewFlagSet("tcp-echo", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", pos[0])
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("echoing TCP", "addr", ln.Addr().String())
	return serveTCPEcho(ctx, ln)
}

// serveTCPEcho echoes each connection on ln until ctx is done, then closes
// the listener and every open connection and returns nil.
func serveTCPEcho(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			ln.Close()
			return fmt.Errorf("accept: %w", err)
		}
		wg.Go(func() { echoConn(ctx, conn) })
	}
}

// echoConn copies conn back to itself until the peer closes its side, then
// closes conn so that the peer reads EOF after the echo.
func echoConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // unblocks the copy on shutdown
	defer stop()
	peer := conn.RemoteAddr().String()
	n, err := io.Copy(conn, conn)
	if err != nil && ctx.Err() == nil {
		logger.Warn("echo failed", "peer", peer, "err", err)
		return
	}
	logger.Info("echoed", "proto", "tcp", "peer", peer, "bytes", n)
}

// runUDPEcho implements "probe udp-echo ADDR".
func runUDPEcho(ctx context.Context, args []string, _ io.Writer) error {
	pos, err := parseArgs(flag.NewFlagSet("udp-echo", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", pos[0])
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("echoing UDP", "addr", pc.LocalAddr().String())
	return serveUDPEcho(ctx, pc)
}

// serveUDPEcho sends every datagram on pc back to its sender until ctx is
// done, then closes pc and returns nil.
func serveUDPEcho(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, maxDatagram)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			pc.Close()
			return fmt.Errorf("read: %w", err)
		}
		if _, err := pc.WriteTo(buf[:n], peer); err != nil {
			// One unreachable sender must not stop the server for the others.
			logger.Warn("echo failed", "peer", peer.String(), "err", err)
			continue
		}
		logger.Info("echoed", "proto", "udp", "peer", peer.String(), "bytes", n)
	}
}
