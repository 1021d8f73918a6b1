package main

import (
	"slices"
	"strings"
	"testing"
)

func TestCommand(t *testing.T) {
	tests := []struct {
		args, want string
	}{
		{"", "redis-server --protected-mode no"},
		{"redis-server", "redis-server --protected-mode no"},
		{"redis-server --appendonly yes", "redis-server --appendonly yes --protected-mode no"},
		{"--appendonly yes", "redis-server --appendonly yes --protected-mode no"},
		{"/etc/redis.conf", "redis-server /etc/redis.conf --protected-mode no"},
		{"redis-server --port 7000 -", "redis-server --port 7000 --protected-mode no -"},
		{"/usr/bin/redis-server --save 60 1", "/usr/bin/redis-server --save 60 1 --protected-mode no"},
		// An explicit choice is the user's to make.
		{"redis-server --protected-mode yes", "redis-server --protected-mode yes"},
		{"redis-cli ping", "redis-cli ping"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			got := command(strings.Fields(tt.args))
			if want := strings.Fields(tt.want); !slices.Equal(got, want) {
				t.Errorf("command(%q) = %q, want %q", tt.args, got, want)
			}
		})
	}
}
