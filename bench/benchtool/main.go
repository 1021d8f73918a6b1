// Command benchtool holds the parts of skiff's benchmarks (bench/run) that
// are awkward in a shell script:
//
//	benchtool rtt-serve ADDR [-for D]        TCP echo server for rtt
//	benchtool rtt ADDR [-n N] [-size B]      TCP round trips; prints µs figures
//	benchtool plot -o FILE.png LABEL=FILE…   running tasks over time, as a PNG
//	benchtool summary RESULTS.tsv            the results table, in Markdown
//	benchtool engine-run -sock S [-n N] [-network-mode M]
//	                                         start N containers on one engine
//	                                         through its API; prints seconds
//
// It is built static (CGO_ENABLED=0), so that bench/run can run it inside a
// host's or a container's network namespace with nsenter.
package main

import (
	"fmt"
	"io"
	"os"
)

type command struct {
	usage string
	run   func(args []string, out io.Writer) error
}

var commands = map[string]command{
	"rtt-serve":  {"rtt-serve ADDR [-for DURATION]", runRTTServe},
	"rtt":        {"rtt ADDR [-n N] [-size BYTES] [-warmup N]", runRTT},
	"plot":       {"plot -o FILE.png [-title T] LABEL=SERIES.tsv…", runPlot},
	"summary":    {"summary RESULTS.tsv", runSummary},
	"engine-run": {"engine-run -sock SOCKET [-n N] [-parallel P] [-network-mode M] [-image IMG]", runEngine},
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "benchtool: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "benchtool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage:")
	for _, name := range []string{"rtt-serve", "rtt", "plot", "summary", "engine-run"} {
		fmt.Fprintf(os.Stderr, "  benchtool %s\n", commands[name].usage)
	}
}
