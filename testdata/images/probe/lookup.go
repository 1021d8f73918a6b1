package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"
)

// runLookup implements "probe lookup NAME [-timeout D]".
func runLookup(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of the lookup")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// The pure-Go resolver reads /etc/hosts and /etc/resolv.conf as the
	// container sees them, which is what a test of service discovery wants.
	return lookup(ctx, &net.Resolver{PreferGo: true}, pos[0], out)
}

// lookup resolves name with r and prints its addresses one per line.
func lookup(ctx context.Context, r *net.Resolver, name string, out io.Writer) error {
	addrs, err := r.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	for _, a := range addrs {
		if _, err := fmt.Fprintln(out, a.Unmap()); err != nil {
			return fmt.Errorf("write address: %w", err)
		}
	}
	return nil
}
