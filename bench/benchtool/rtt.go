package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// runRTTServe echoes every TCP connection on ADDR, for -for (then exits 0),
// so that a server bench/run forgets cannot outlive the run.
func runRTTServe(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("rtt-serve", flag.ContinueOnError)
	life := fs.Duration("for", 10*time.Minute, "exit after this long")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", pos[0])
	if err != nil {
		return err
	}
	time.AfterFunc(*life, func() { ln.Close() })
	fmt.Fprintf(out, "echoing on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// rttStats are the round-trip times of one run, in microseconds.
type rttStats struct {
	N                          int
	Min, P10, Median, P90, P99 float64
}

func (s rttStats) String() string {
	return fmt.Sprintf("median_us=%.1f min_us=%.1f p10_us=%.1f p90_us=%.1f p99_us=%.1f n=%d",
		s.Median, s.Min, s.P10, s.P90, s.P99, s.N)
}

// runRTT measures TCP round trips to an echo server: it writes -size bytes
// and reads them back, -n times, on one connection with Nagle off (Go's
// default), after -warmup untimed round trips. This is what a request and
// its answer cost on the path, the way netperf's TCP_RR measures it.
func runRTT(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("rtt", flag.ContinueOnError)
	n := fs.Int("n", 5000, "timed round trips")
	size := fs.Int("size", 64, "bytes per message")
	warmup := fs.Int("warmup", 200, "untimed round trips first")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *n < 1 || *size < 1 {
		return errors.New("-n and -size must be positive")
	}
	c, err := net.DialTimeout("tcp", pos[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(*timeout)); err != nil {
		return err
	}
	msg := make([]byte, *size)
	buf := make([]byte, *size)
	samples := make([]time.Duration, 0, *n)
	for i := 0; i < *warmup+*n; i++ {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if i >= *warmup {
			samples = append(samples, time.Since(start))
		}
	}
	fmt.Fprintln(out, stats(samples))
	return nil
}

func stats(samples []time.Duration) rttStats {
	s := slices.Clone(samples)
	slices.Sort(s)
	q := func(p float64) float64 {
		return float64(s[int(p*float64(len(s)-1))].Nanoseconds()) / 1e3
	}
	return rttStats{N: len(s), Min: q(0), P10: q(0.1), Median: q(0.5), P90: q(0.9), P99: q(0.99)}
}

// parse parses flags wherever they stand among the positional arguments and
// checks the positional count.
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if positional >= 0 && len(pos) != positional {
		return nil, fmt.Errorf("got %d arguments, want %d", len(pos), positional)
	}
	return pos, nil
}
