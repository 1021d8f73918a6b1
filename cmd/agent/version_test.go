package main

import (
	"bytes"
	"testing"

	"github.com/skiffhq/skiff/version"
)

func TestVersionFlag(t *testing.T) {
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("skiff-agent --version: %v", err)
	}
	if want := "skiff-agent version " + version.Version + "\n"; out.String() != want {
		t.Fatalf("skiff-agent --version printed %q, want %q", out.String(), want)
	}
}
