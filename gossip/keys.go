package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// KeySize is the size of a gossip key: memberlist encrypts with AES-GCM,
// and skiff uses AES-256 only.
const KeySize = 32

// ErrUnencrypted is returned by the key methods of a pool started without
// Config.Keys: memberlist fixes at start whether a pool encrypts, so a key
// cannot be brought in later.
var ErrUnencrypted = errors.New("gossip pool runs unencrypted: start it with Config.Keys to rotate keys")

// newKeyring returns the keyring for keys, the first of them primary, or
// nil for none. The keys are copied: the caller's slices stay its own.
func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	for i, k := range keys {
		if err := validateKey(k); err != nil {
			return nil, fmt.Errorf("gossip key %d: %w", i, err)
		}
	}
	ring, err := memberlist.NewKeyring(nil, bytes.Clone(keys[0]))
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	for _, k := range keys[1:] {
		if err := ring.AddKey(bytes.Clone(k)); err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
	}
	return ring, nil
}

func validateKey(key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("key is %d bytes, want %d (AES-256)", len(key), KeySize)
	}
	return nil
}

// Rotating the key of a running pool takes three steps, each finished on
// every member before the next begins, since members only learn keys from
// whoever distributes them (over TLS), never through gossip:
//
//  1. InstallKey(new) on every member: each can now decrypt both keys.
//  2. UseKey(new) on every member: each encrypts with the new key, which
//     all can read; members still on the old one are read as well.
//  3. RemoveKey(old) on every member: nothing encrypts with it any more.
//
// A member that misses a step falls out of the pool once the others stop
// reading its key, and must be handed the current key to join again.

// InstallKey adds key to the keyring, for decryption only: the primary key
// still encrypts. Installing a key already there does nothing.
func (p *Pool) InstallKey(key []byte) error {
	if p.keyring == nil {
		return ErrUnencrypted
	}
	if err := validateKey(key); err != nil {
		return fmt.Errorf("install gossip key: %w", err)
	}
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	if err := p.keyring.AddKey(bytes.Clone(key)); err != nil {
		return fmt.Errorf("install gossip key: %w", err)
	}
	return nil
}

// UseKey makes an installed key the primary one, which encrypts everything
// this member sends from now on.
func (p *Pool) UseKey(key []byte) error {
	if p.keyring == nil {
		return ErrUnencrypted
	}
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	if err := p.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use gossip key: %w", err)
	}
	return nil
}

// RemoveKey drops key from the keyring; messages encrypted with it are
// refused from then on. The primary key cannot be removed (UseKey another
// first); removing a key that is not installed does nothing.
//
// Memberlist's Keyring.RemoveKey shifts the later keys down in place, in
// the array that packets being decrypted are reading at that moment. To
// stay clear of that race, RemoveKey only ever removes the last key: the
// keys after the one to go are taken off the end and put back after it.
// For that instant they cannot decrypt, which is harmless when no member
// encrypts with them, as after step 2 of a rotation.
func (p *Pool) RemoveKey(key []byte) error {
	if p.keyring == nil {
		return ErrUnencrypted
	}
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	return p.removeKeyLocked(key)
}

// removeKeyLocked is RemoveKey for a caller that holds keysMu.
func (p *Pool) removeKeyLocked(key []byte) error {
	keys := p.copyKeys()
	i := slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) })
	switch {
	case i < 0:
		return nil
	case i == 0:
		return errors.New("remove gossip key: it is the primary key; make another primary first")
	}
	after := keys[i+1:]
	for j := len(keys) - 1; j >= i; j-- {
		if err := p.keyring.RemoveKey(keys[j]); err != nil {
			return fmt.Errorf("remove gossip key: %w", err)
		}
	}
	for _, k := range after {
		if err := p.keyring.AddKey(k); err != nil {
			return fmt.Errorf("remove gossip key: put back a later key: %w", err)
		}
	}
	return nil
}

// SetKeys makes the keyring exactly keys, the first primary, whatever it
// held before: the keyring the cluster hands out at each stage of a
// rotation. It takes the steps of a rotation in their order (install every
// key, make the first primary, remove the rest), so that at no moment does
// the member stop reading a key a peer may still encrypt with, or encrypt
// with a key a peer cannot read yet, provided keys is a stage the others
// have reached too.
func (p *Pool) SetKeys(keys [][]byte) error {
	if p.keyring == nil {
		return ErrUnencrypted
	}
	if len(keys) == 0 {
		return errors.New("set gossip keys: no keys; a pool that encrypts needs a primary key")
	}
	for i, k := range keys {
		if err := validateKey(k); err != nil {
			return fmt.Errorf("set gossip keys: key %d: %w", i, err)
		}
	}
	// One lock for the whole change: two callers must not interleave
	// their steps, or one could remove a key the other just installed.
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	for _, k := range keys {
		if err := p.keyring.AddKey(bytes.Clone(k)); err != nil {
			return fmt.Errorf("set gossip keys: install: %w", err)
		}
	}
	if err := p.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("set gossip keys: use the primary: %w", err)
	}
	for _, k := range p.copyKeys() {
		if slices.ContainsFunc(keys, func(want []byte) bool { return bytes.Equal(want, k) }) {
			continue
		}
		if err := p.removeKeyLocked(k); err != nil {
			return fmt.Errorf("set gossip keys: %w", err)
		}
	}
	return nil
}

// ListKeys returns copies of the installed keys, the primary first; nil for
// an unencrypted pool.
func (p *Pool) ListKeys() [][]byte {
	if p.keyring == nil {
		return nil
	}
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	return p.copyKeys()
}

// copyKeys copies the keyring's keys. The caller holds keysMu, so no
// removal shifts them while they are copied.
func (p *Pool) copyKeys() [][]byte {
	keys := p.keyring.GetKeys()
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = bytes.Clone(k)
	}
	return out
}
