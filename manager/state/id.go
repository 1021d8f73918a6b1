package state

import (
	"crypto/rand"
	"strings"
)

// NewID returns a random object ID: 26 characters of lowercase base 32 (128
// bits), so short prefixes are unique in practice and users can type them,
// as with Docker's IDs. Only the leader calls it, when it builds a command;
// Apply never does, so replaying the log yields the same IDs.
func NewID() string {
	return strings.ToLower(rand.Text())
}
