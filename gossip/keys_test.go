package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
)

// testKey returns a gossip key filled with b.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// sendTo sends msg from one member to another by UDP, as SendToAgents does.
func sendTo(t *testing.T, from, to *testMember, msg string) {
	t.Helper()
	node := &memberlist.Node{Name: to.meta.memberName(), Addr: to.Memberlist().LocalNode().Addr, Port: to.Memberlist().LocalNode().Port}
	if err := from.Memberlist().SendBestEffort(node, []byte(msg)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
}

// udpAddr is where m sends its packets from.
func udpAddr(m *testMember) string { return m.transport.udp.LocalAddr().String() }

// TestEncryptedPoolForms checks that members holding the same key form a
// pool and carry user messages.
func TestEncryptedPoolForms(t *testing.T) {
	keys := [][]byte{testKey(1)}
	mgr := startWith(t, Meta{Name: "n0", Role: RoleManager, APIAddr: "127.0.0.1:4242"}, keys)
	a0 := startWith(t, Meta{Name: "n0", Role: RoleAgent}, keys, mgr.addr)
	a1 := startWith(t, Meta{Name: "n1", Role: RoleAgent}, keys, mgr.addr)
	waitMembers(t, []Member{liveMember(a0.meta), liveMember(mgr.meta), liveMember(a1.meta)}, mgr, a0, a1)
	mgr.SendToAgents([]byte("sealed"))
	waitReceived(t, a0, "sealed")
	waitReceived(t, a1, "sealed")
}

// TestWrongKeyShutOut checks that a member with another key, or with no
// key, can neither join an encrypted pool nor get a message to it heard.
// That a message was refused is established by the refusal itself, for the
// keyless sender (memberlist logs a failed decryption from its address),
// and by a barrier for the one with the wrong key: it then takes the
// pool's key and sends again from the same socket; loopback keeps the two
// in order, so once the second is in, the first would be too had it been
// accepted.
func TestWrongKeyShutOut(t *testing.T) {
	good := startWith(t, Meta{Name: "good", Role: RoleAgent}, [][]byte{testKey(1)})
	wrong := startWith(t, Meta{Name: "wrong", Role: RoleAgent}, [][]byte{testKey(2)})
	keyless := start(t, Meta{Name: "keyless", Role: RoleAgent})

	for _, m := range []*testMember{wrong, keyless} {
		if n, err := m.Memberlist().Join([]string{good.addr}); err == nil || n != 0 {
			t.Errorf("%s joined the encrypted pool: reached %d, error %v", m.meta.Name, n, err)
		}
	}
	// Join returns once the good member has refused the push/pull, which
	// is where it would have learnt of the other.
	if got, want := good.Members(), []Member{liveMember(good.meta)}; !slices.Equal(got, want) {
		t.Errorf("after the refused joins, the pool's members are %+v, want %+v", got, want)
	}

	sendTo(t, keyless, good, "plaintext")
	eventually(t, waitTimeout, func() error {
		if len(good.logs.find("Decrypt packet failed", udpAddr(keyless))) == 0 {
			return errors.New("the keyless member's packet has not been refused yet")
		}
		return nil
	})

	sendTo(t, wrong, good, "wrong key")
	if err := wrong.InstallKey(testKey(1)); err != nil {
		t.Fatal(err)
	}
	if err := wrong.UseKey(testKey(1)); err != nil {
		t.Fatal(err)
	}
	sendTo(t, wrong, good, "barrier")
	waitReceived(t, good, "barrier")
	if got := good.delegate.received(); !slices.Equal(got, []string{"barrier"}) {
		t.Errorf("the encrypted member received %q, want only the barrier", got)
	}
}

// TestKeyRotationKeepsPool rotates the key of a running pool (install the
// new key everywhere, make it primary everywhere, remove the old one
// everywhere) and checks that no member was reported failed or gone, that
// every member still hears every other directly, and that afterwards only
// the new key gets a member in.
func TestKeyRotationKeepsPool(t *testing.T) {
	oldKey, newKey := testKey(1), testKey(2)
	mgr := startWith(t, Meta{Name: "n0", Role: RoleManager, APIAddr: "127.0.0.1:4242"}, [][]byte{oldKey})
	a0 := startWith(t, Meta{Name: "n0", Role: RoleAgent}, [][]byte{oldKey}, mgr.addr)
	a1 := startWith(t, Meta{Name: "n1", Role: RoleAgent}, [][]byte{oldKey}, mgr.addr)
	pool := []*testMember{mgr, a0, a1}
	all := []Member{liveMember(a0.meta), liveMember(mgr.meta), liveMember(a1.meta)}
	waitMembers(t, all, pool...)

	// allHeard checks that each member probes each other directly with the
	// keys it has now, which takes a full round trip under them.
	allHeard := func(step string) {
		t.Helper()
		for _, from := range pool {
			for _, to := range pool {
				if from == to {
					continue
				}
				eventually(t, waitTimeout, func() error {
					if op := from.Probe(to.meta.Name, to.meta.Role); op != Heard {
						return fmt.Errorf("after %s, %s's probe of %s: %v", step, from.meta.memberName(), to.meta.memberName(), op)
					}
					return nil
				})
			}
		}
	}
	for _, step := range []struct {
		name string
		do   func(*testMember) error
		want [][]byte
	}{
		{"install", func(m *testMember) error { return m.InstallKey(newKey) }, [][]byte{oldKey, newKey}},
		{"use", func(m *testMember) error { return m.UseKey(newKey) }, [][]byte{newKey, oldKey}},
		{"remove", func(m *testMember) error { return m.RemoveKey(oldKey) }, [][]byte{newKey}},
	} {
		for _, m := range pool {
			if err := step.do(m); err != nil {
				t.Fatalf("%s on %s: %v", step.name, m.meta.memberName(), err)
			}
			if got := m.ListKeys(); !slices.EqualFunc(got, step.want, bytes.Equal) {
				t.Fatalf("after %s, %s lists keys %x, want %x", step.name, m.meta.memberName(), got, step.want)
			}
		}
		allHeard(step.name)
	}
	mgr.SendToAgents([]byte("rotated"))
	waitReceived(t, a0, "rotated")
	waitReceived(t, a1, "rotated")
	waitMembers(t, all, pool...)
	for _, m := range pool {
		for _, ev := range m.events.all() {
			if ev.Kind == MemberFailed || ev.Kind == MemberLeft {
				t.Errorf("%s reported %+v during the rotation", m.meta.memberName(), ev)
			}
		}
	}

	stale := startWith(t, Meta{Name: "stale", Role: RoleAgent}, [][]byte{oldKey})
	if n, err := stale.Memberlist().Join([]string{mgr.addr}); err == nil || n != 0 {
		t.Errorf("a member with the removed key joined: reached %d, error %v", n, err)
	}
	fresh := startWith(t, Meta{Name: "fresh", Role: RoleAgent}, [][]byte{newKey})
	if _, err := fresh.Memberlist().Join([]string{mgr.addr}); err != nil {
		t.Errorf("a member with the new key cannot join: %v", err)
	}
}

// TestKeyMethods checks the key methods' edge cases: the key size, the
// primary that cannot be removed, the order kept when a middle key goes,
// and an unencrypted pool, which has no keys to change.
func TestKeyMethods(t *testing.T) {
	if p, err := Start(context.Background(), Config{Meta: Meta{Name: "short", Role: RoleAgent}, BindAddr: "127.0.0.1", Keys: [][]byte{make([]byte, 16)}}); err == nil {
		p.Kill()
		t.Fatal("Start accepted a 16-byte key")
	}

	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	cfgKeys := [][]byte{k1, k2, k3}
	m := startWith(t, Meta{Name: "m", Role: RoleAgent}, cfgKeys)
	cfgKeys[0][0] = 9 // the pool holds copies
	k1 = testKey(1)
	if got := m.ListKeys(); !slices.EqualFunc(got, [][]byte{k1, k2, k3}, bytes.Equal) {
		t.Fatalf("ListKeys() = %x, want the configured keys in order", got)
	}
	if err := m.InstallKey(make([]byte, 24)); err == nil {
		t.Error("InstallKey accepted a 24-byte key")
	}
	if err := m.UseKey(testKey(4)); err == nil {
		t.Error("UseKey accepted a key that is not installed")
	}
	if err := m.RemoveKey(k1); err == nil {
		t.Error("RemoveKey removed the primary key")
	}
	if err := m.RemoveKey(k2); err != nil {
		t.Fatalf("RemoveKey of a middle key: %v", err)
	}
	if got := m.ListKeys(); !slices.EqualFunc(got, [][]byte{k1, k3}, bytes.Equal) {
		t.Errorf("after removing the middle key, ListKeys() = %x, want %x", got, [][]byte{k1, k3})
	}
	if err := m.RemoveKey(testKey(4)); err != nil {
		t.Errorf("RemoveKey of a key not installed: %v", err)
	}

	plain := start(t, Meta{Name: "plain", Role: RoleAgent})
	for name, err := range map[string]error{
		"InstallKey": plain.InstallKey(k1),
		"UseKey":     plain.UseKey(k1),
		"RemoveKey":  plain.RemoveKey(k1),
	} {
		if !errors.Is(err, ErrUnencrypted) {
			t.Errorf("%s on an unencrypted pool: %v, want ErrUnencrypted", name, err)
		}
	}
	if got := plain.ListKeys(); got != nil {
		t.Errorf("ListKeys on an unencrypted pool = %x, want nil", got)
	}
}

// TestSetKeys takes a pool through a rotation with SetKeys alone, each
// stage the keyring the cluster hands out, and checks the keyring after
// each and that the members keep hearing each other; then that a member
// that missed the rotation is brought straight to the new key, and that
// keyrings SetKeys cannot apply are refused without a change.
func TestSetKeys(t *testing.T) {
	oldKey, newKey := testKey(1), testKey(2)
	mgr := startWith(t, Meta{Name: "n0", Role: RoleManager, APIAddr: "127.0.0.1:4242"}, [][]byte{oldKey})
	a0 := startWith(t, Meta{Name: "n0", Role: RoleAgent}, [][]byte{oldKey}, mgr.addr)
	pool := []*testMember{mgr, a0}
	waitMembers(t, []Member{liveMember(a0.meta), liveMember(mgr.meta)}, pool...)
	// away holds the old key, and is not in the pool during the rotation.
	away := startWith(t, Meta{Name: "away", Role: RoleAgent}, [][]byte{oldKey})

	for _, stage := range [][][]byte{{oldKey, newKey}, {newKey, oldKey}, {newKey}} {
		for _, m := range pool {
			if err := m.SetKeys(stage); err != nil {
				t.Fatalf("SetKeys(%x) on %s: %v", stage, m.meta.memberName(), err)
			}
			// Setting the same keyring again changes nothing.
			if err := m.SetKeys(stage); err != nil {
				t.Fatalf("SetKeys(%x) again on %s: %v", stage, m.meta.memberName(), err)
			}
			if got := m.ListKeys(); !slices.EqualFunc(got, stage, bytes.Equal) {
				t.Fatalf("after SetKeys(%x), %s lists keys %x", stage, m.meta.memberName(), got)
			}
		}
		eventually(t, waitTimeout, func() error {
			if op := mgr.Probe(a0.meta.Name, a0.meta.Role); op != Heard {
				return fmt.Errorf("with keys %x, the manager's probe of the agent: %v", stage, op)
			}
			return nil
		})
	}

	if n, err := away.Memberlist().Join([]string{mgr.addr}); err == nil || n != 0 {
		t.Errorf("a member with only the removed key joined: reached %d, error %v", n, err)
	}
	if err := away.SetKeys([][]byte{newKey}); err != nil {
		t.Fatalf("SetKeys on the member that was away: %v", err)
	}
	if got := away.ListKeys(); !slices.EqualFunc(got, [][]byte{newKey}, bytes.Equal) {
		t.Fatalf("the member that was away lists keys %x, want only the new one", got)
	}
	if _, err := away.Memberlist().Join([]string{mgr.addr}); err != nil {
		t.Errorf("the member that was away cannot join with the current keyring: %v", err)
	}

	for name, keys := range map[string][][]byte{
		"no keys":   nil,
		"short key": {newKey, make([]byte, 16)},
	} {
		if err := mgr.SetKeys(keys); err == nil {
			t.Errorf("SetKeys with %s succeeded", name)
		}
		if got := mgr.ListKeys(); !slices.EqualFunc(got, [][]byte{newKey}, bytes.Equal) {
			t.Errorf("after SetKeys with %s, the keys are %x, want them unchanged", name, got)
		}
	}
	plain := start(t, Meta{Name: "plain", Role: RoleAgent})
	if err := plain.SetKeys([][]byte{newKey}); !errors.Is(err, ErrUnencrypted) {
		t.Errorf("SetKeys on an unencrypted pool: %v, want ErrUnencrypted", err)
	}
}
