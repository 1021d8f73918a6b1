// Command redis-entrypoint is the entrypoint of the skiff-test/redis image.
// It gives that image the behaviour of the official redis image, on which
// compose files such as the tutorial's rely:
//
//   - arguments that start with "-" or name a .conf file are options for
//     redis-server ("command: --appendonly yes");
//   - redis-server runs with protected mode off, since its clients are other
//     containers, not loopback. The official image patches that default into
//     its build; Debian's binary keeps it on, so it is passed as an option.
//
// Any other command runs unchanged. The entrypoint replaces itself with the
// command, which thus gets the signals that docker sends to PID 1.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

func main() {
	argv := command(os.Args[1:])
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail(err)
	}
	fail(syscall.Exec(path, argv, os.Environ()))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "redis-entrypoint: %v\n", err)
	os.Exit(127) // what a shell answers for a command it cannot run
}

// command returns the argv to run for the container's arguments.
func command(args []string) []string {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") || strings.HasSuffix(args[0], ".conf") {
		args = append([]string{"redis-server"}, args...)
	}
	if filepath.Base(args[0]) != "redis-server" || slices.Contains(args, "--protected-mode") {
		return args
	}
	// Options given later win in redis-server, so the default goes at the
	// end, yet before a final "-" (read more options from stdin), which
	// must stay last.
	end := len(args)
	if end > 1 && args[end-1] == "-" {
		end--
	}
	return slices.Concat(args[:end], []string{"--protected-mode", "no"}, args[end:])
}
