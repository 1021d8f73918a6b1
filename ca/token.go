package ca

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"strings"
)

// A join token is "SKFTKN-1-<digest>-<secret>", after Swarm's SWMTKN-1: the
// digest is the CA certificate's fingerprint, so that a joiner can check the
// CA a server presents before it trusts it with anything, and the secret is
// what the leader checks before it signs. The worker and manager tokens of
// a cluster share the digest and differ in the secret.
const (
	tokenPrefix  = "SKFTKN"
	tokenVersion = "1"
	// digestLen fits SHA-256 in base 36; secretLen fits 128 random bits.
	digestLen = 50
	secretLen = 25
)

// Token is a parsed join token.
type Token struct {
	// Digest is the fingerprint of the CA the token belongs to.
	Digest string
	// Secret is what the leader compares with the cluster's secrets.
	Secret string
}

func (t Token) String() string {
	return strings.Join([]string{tokenPrefix, tokenVersion, t.Digest, t.Secret}, "-")
}

// NewSecret makes a join token's secret.
func NewSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base36(b, secretLen)
}

// ParseToken reads a join token, and says what is wrong with one that is
// not.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), "-")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return Token{}, fmt.Errorf("malformed join token: want %s-%s-<digest>-<secret>; print one with `skiff cluster join-token worker|manager`", tokenPrefix, tokenVersion)
	}
	if parts[1] != tokenVersion {
		return Token{}, fmt.Errorf("join token of version %q; this skiff reads version %s", parts[1], tokenVersion)
	}
	t := Token{Digest: parts[2], Secret: parts[3]}
	if len(t.Digest) != digestLen || len(t.Secret) != secretLen || !isBase36(t.Digest) || !isBase36(t.Secret) {
		return Token{}, fmt.Errorf("malformed join token: it was cut short or altered; print it again with `skiff cluster join-token worker|manager`")
	}
	return t, nil
}

// SecretMatches compares a token's secret with one of the cluster's in
// constant time.
func (t Token) SecretMatches(secret string) bool {
	return secret != "" && subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1
}

func isBase36(s string) bool {
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'z') {
			return false
		}
	}
	return true
}
