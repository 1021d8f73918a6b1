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
		t.Fatalf("skiff-manager --version: %v", err)
	}
	if want := "skiff-manager version " + version.Version + "\n"; out.String() != want {
		t.Fatalf("skiff-manager --version printed %q, want %q", out.String(), want)
	}
}
