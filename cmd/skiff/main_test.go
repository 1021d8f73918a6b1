package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// runMainEnv makes the test binary run main instead of the tests, so that
// a test sees the exit status and the output a user sees.
const runMainEnv = "SKIFF_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestUnknownCommandExitStatus(t *testing.T) {
	for args, want := range map[string]string{
		"nosuch":         "skiff: 'nosuch' is not a skiff command.\nSee 'skiff --help'\n",
		"service nosuch": "skiff: unknown command: skiff service nosuch\n\nUsage:  skiff service\n\nRun 'skiff service --help' for more information\n",
	} {
		cmd := exec.Command(os.Args[0], strings.Fields(args)...)
		cmd.Args = append([]string{"skiff"}, cmd.Args[1:]...)
		cmd.Env = append(os.Environ(), runMainEnv+"=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("skiff %s: %v, want exit status 1", args, err)
		}
		if stderr.String() != want || stdout.Len() != 0 {
			t.Errorf("skiff %s:\nstderr %q\nstdout %q\nwant on stderr %q", args, stderr.String(), stdout.String(), want)
		}
	}
}
