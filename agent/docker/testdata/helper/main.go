// Command helper is the program inside the skiff-test-exec/helper image that
// the agent/docker tests build and import: one static binary, so that the
// tests need no registry and no other image.
//
//	helper sleep              print "ready", then run until SIGTERM or SIGINT,
//	                          and exit 0
//	helper exit CODE          exit with CODE
//	helper log OUT:TEXT ERR:TEXT ...
//	                          write each TEXT as a line on stdout (OUT) or
//	                          stderr (ERR), in order; then run as sleep if
//	                          the last argument is "--sleep", else exit 0
//	helper alloc              print "ready", then on SIGUSR1 allocate memory
//	                          until the kernel kills it
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: helper sleep|exit CODE|log ...|alloc")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "sleep":
		sleep()
	case "exit":
		code, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(code)
	case "log":
		args := os.Args[2:]
		stay := len(args) > 0 && args[len(args)-1] == "--sleep"
		if stay {
			args = args[:len(args)-1]
		}
		for _, a := range args {
			switch {
			case strings.HasPrefix(a, "OUT:"):
				fmt.Fprintln(os.Stdout, strings.TrimPrefix(a, "OUT:"))
			case strings.HasPrefix(a, "ERR:"):
				fmt.Fprintln(os.Stderr, strings.TrimPrefix(a, "ERR:"))
			}
		}
		if stay {
			sleep()
		}
	case "alloc":
		// Waiting for the go-ahead lets the test start the allocation only
		// once the engine watches for OOM: a kill in the first milliseconds
		// of a container can come before that, and go unflagged.
		goAhead := make(chan os.Signal, 1)
		signal.Notify(goAhead, syscall.SIGUSR1)
		// A signal sent before Notify would be lost; "ready" says it is safe.
		fmt.Println("ready")
		<-goAhead
		var hold [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1 // touch every page, so that it is really charged
			}
			hold = append(hold, b)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

// sleep blocks until asked to stop. As PID 1 the process gets no default
// signal handling, so SIGTERM must be caught for a graceful stop to work, and
// one sent before that is lost: "ready" tells the test it may stop it.
func sleep() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	<-c
	os.Exit(0)
}
