package main

import (
	"bytes"
	"context"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExecuteExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, 2},
		{[]string{"bogus"}, 2},
		{[]string{"exit", "0"}, 0},
		{[]string{"exit", "42"}, 42},
		{[]string{"exit", "256"}, 2},
		{[]string{"exit", "4x"}, 2},
		{[]string{"exit"}, 2},
		{[]string{"dial", "sctp", "127.0.0.1:1", "hi"}, 2},
		{[]string{"http", "http://127.0.0.1:1/", "-n", "0"}, 2},
		{[]string{"lookup", "-h"}, 2},
		{[]string{"http", "http://127.0.0.1:1/", "-timeout", "1s"}, 1}, // nothing listens on port 1
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := execute(context.Background(), tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("exit code %d, want %d; stderr: %s", got, tt.want, stderr.String())
			}
		})
	}
}

func TestSleepReturnsWhenStopped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- execute(ctx, []string{"sleep"}, &bytes.Buffer{}, &bytes.Buffer{}) }()

	select {
	case code := <-done:
		t.Fatalf("sleep returned %d before it was stopped", code)
	default:
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("sleep exit code %d, want 0", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sleep did not return after it was stopped")
	}
}

func TestParseArgsInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	n := fs.Int("n", 1, "")
	pos, err := parseArgs(fs, []string{"a", "-n", "3", "b"}, 2)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	if !slices.Equal(pos, []string{"a", "b"}) || *n != 3 {
		t.Errorf("parseArgs = %q, -n %d; want [a b], -n 3", pos, *n)
	}
}

func TestParseArgsCountsPositionals(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if _, err := parseArgs(fs, []string{"a", "b"}, 1); err == nil {
		t.Error("parseArgs accepted 2 arguments where 1 is wanted")
	}
}
