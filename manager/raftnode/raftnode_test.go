package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago. The transport needs a concrete port to advertise, so ":0" will not do.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testConfig is a member in dir at addr with fast timing.
func testConfig(id, dir, addr string, bootstrap bool) Config {
	return Config{
		ID: id, DataDir: dir, BindAddr: addr, Bootstrap: bootstrap,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
	}
}

// open starts a member and closes it when the test ends (Close is
// idempotent enough for an explicit earlier Close: errors are ignored).
func open(t testing.TB, cfg Config, store *state.Store) *Node {
	t.Helper()
	n, err := Open(cfg, store)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.DataDir, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLeader waits until n leads.
func waitLeader(t *testing.T, n *Node) {
	t.Helper()
	waitFor(t, 15*time.Second, func() error {
		if !n.IsLeader() {
			return fmt.Errorf("state %s", n.State())
		}
		return nil
	})
}

func putStack(id, name string) *skiffpb.Command {
	return &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutStack{
		PutStack: &skiffpb.Stack{Id: id, Meta: &skiffpb.Meta{}, Name: name},
	}}}}
}

// propose commits cmd and fails the test on an error.
func propose(t *testing.T, n *Node, cmd *skiffpb.Command) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := n.Propose(ctx, cmd)
	if err != nil {
		t.Fatalf("Propose: %v", err)
	}
	return idx
}

// stacks lists the names of the stored stacks.
func stacks(s *state.Store) []string {
	var out []string
	s.View(func(tx state.ReadTx) {
		for _, st := range tx.Stacks() {
			out = append(out, st.GetName())
		}
	})
	return out
}

// waitStacks waits until store holds n stacks.
func waitStacks(t *testing.T, s *state.Store, n int) {
	t.Helper()
	waitFor(t, 15*time.Second, func() error {
		if got := len(stacks(s)); got != n {
			return fmt.Errorf("%d stacks, want %d", got, n)
		}
		return nil
	})
}

// TestSingleNodeProposeAndReopen: a bootstrapped single member leads,
// applies what it commits before Propose returns, reports the store's
// verdict, and after a restart replays its log into a fresh store.
func TestSingleNodeProposeAndReopen(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	if HasState(dir) {
		t.Fatal("HasState on an empty dir")
	}
	store := state.New()
	n := open(t, testConfig("m1", dir, addr, true), store)
	waitLeader(t, n)
	if a, id := n.Leader(); a != addr || id != "m1" {
		t.Errorf("Leader() = %q %q", a, id)
	}
	if n.Addr() != addr {
		t.Errorf("Addr() = %q, want %q", n.Addr(), addr)
	}
	servers, err := n.Servers()
	if err != nil || len(servers) != 1 || servers[0] != (Server{ID: "m1", Address: addr, Voter: true}) {
		t.Errorf("Servers() = %v, %v", servers, err)
	}
	if n.Term() == 0 {
		t.Error("Term() = 0 for a leader")
	}

	var last uint64
	for i := 0; i < 20; i++ {
		idx := propose(t, n, putStack(fmt.Sprintf("s%02d", i), fmt.Sprintf("stack%02d", i)))
		// Propose returns once the leader's store applied the command.
		if store.Index() < idx {
			t.Fatalf("store at %d after Propose returned %d", store.Index(), idx)
		}
		if idx <= last {
			t.Fatalf("index %d after %d", idx, last)
		}
		last = idx
	}
	var v uint64
	store.View(func(tx state.ReadTx) { v = tx.Stack("s05").GetMeta().GetVersion() })
	if v == 0 || v > last {
		t.Errorf("stack version %d", v)
	}

	// The store's verdict comes back, with the entry's index.
	idx, err := n.Propose(context.Background(), putStack("s00", "again"))
	if !errors.Is(err, state.ErrVersionConflict) || idx <= last {
		t.Fatalf("conflicting Propose = %d, %v; want ErrVersionConflict at a new index", idx, err)
	}
	if err := n.Barrier(context.Background()); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	if n.AppliedIndex() < idx {
		t.Errorf("AppliedIndex %d < %d", n.AppliedIndex(), idx)
	}
	want := stacks(store)
	if len(want) != 20 {
		t.Fatalf("%d stacks", len(want))
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !HasState(dir) {
		t.Fatal("HasState false after a run")
	}

	// Reopen without bootstrap: the log is replayed into a fresh store.
	store2 := state.New()
	n2 := open(t, testConfig("m1", dir, addr, false), store2)
	waitLeader(t, n2)
	waitStacks(t, store2, 20)
	if got := stacks(store2); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after reopen %v, want %v", got, want)
	}
	var v2 uint64
	store2.View(func(tx state.ReadTx) { v2 = tx.Stack("s05").GetMeta().GetVersion() })
	if v2 != v {
		t.Errorf("version after replay %d, want %d", v2, v)
	}
	// And it goes on committing.
	propose(t, n2, putStack("s99", "after"))
	waitStacks(t, store2, 21)
}

// TestSnapshotAndRestore: after a snapshot, a restart restores the store
// from it (synchronously, before any election) and replays the entries
// committed after it.
func TestSnapshotAndRestore(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := testConfig("m1", dir, addr, true)
	cfg.SnapshotThreshold = 16
	store := state.New()
	n := open(t, cfg, store)
	waitLeader(t, n)
	for i := 0; i < 50; i++ {
		propose(t, n, putStack(fmt.Sprintf("a%02d", i), fmt.Sprintf("a%02d", i)))
	}
	// Raft checks the threshold only every SnapshotInterval (minutes), so
	// the snapshot is forced.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snapIndex := store.Index()
	snaps, err := raft.NewFileSnapshotStore(dir, 2, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 || metas[0].Index < snapIndex-1 {
		t.Fatalf("snapshots %v, %v; want one at about %d", metas, err, snapIndex)
	}
	for i := 0; i < 10; i++ {
		propose(t, n, putStack(fmt.Sprintf("b%02d", i), fmt.Sprintf("b%02d", i)))
	}
	want := stacks(store)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	store2 := state.New()
	cfg.Bootstrap = false
	n2 := open(t, cfg, store2)
	// Restored from the snapshot inside Open, before any leader exists.
	if got := store2.Index(); got < metas[0].Index {
		t.Fatalf("store at index %d right after Open, want the snapshot's %d", got, metas[0].Index)
	}
	if got := len(stacks(store2)); got < 50 {
		t.Fatalf("%d stacks right after Open, want the snapshot's 50", got)
	}
	waitLeader(t, n2)
	waitStacks(t, store2, 60)
	if got := stacks(store2); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after restore %v, want %v", got, want)
	}
}

// TestProposeOnNonLeader: a member that never joined a cluster, and a
// follower of one, refuse proposals with ErrNotLeader.
func TestProposeOnNonLeader(t *testing.T) {
	t.Run("never joined", func(t *testing.T) {
		n := open(t, testConfig("lonely", t.TempDir(), freeAddr(t), false), state.New())
		if n.IsLeader() {
			t.Fatal("an unjoined member leads")
		}
		_, err := n.Propose(context.Background(), putStack("s", "s"))
		if !errors.Is(err, ErrNotLeader) {
			t.Fatalf("Propose = %v, want ErrNotLeader", err)
		}
		if a, id := n.Leader(); a != "" || id != "" {
			t.Errorf("Leader() = %q %q, want none", a, id)
		}
		if err := n.AddVoter(context.Background(), "x", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
			t.Errorf("AddVoter = %v, want ErrNotLeader", err)
		}
	})
	t.Run("follower", func(t *testing.T) {
		s1, s2 := state.New(), state.New()
		leader := open(t, testConfig("m1", t.TempDir(), freeAddr(t), true), s1)
		waitLeader(t, leader)
		propose(t, leader, putStack("s1", "before-join"))
		follower := open(t, testConfig("m2", t.TempDir(), freeAddr(t), false), s2)
		if err := leader.AddVoter(context.Background(), "m2", follower.Addr()); err != nil {
			t.Fatalf("AddVoter: %v", err)
		}
		propose(t, leader, putStack("s2", "after-join"))
		// The follower catches up through replication.
		waitStacks(t, s2, 2)
		if _, err := follower.Propose(context.Background(), putStack("s3", "x")); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("follower Propose = %v, want ErrNotLeader", err)
		}
		if _, id := follower.Leader(); id != "m1" {
			t.Errorf("follower sees leader %q", id)
		}
		servers, err := follower.Servers()
		if err != nil || len(servers) != 2 {
			t.Errorf("Servers() = %v, %v", servers, err)
		}
		if err := leader.RemoveServer(context.Background(), "m2"); err != nil {
			t.Fatalf("RemoveServer: %v", err)
		}
	})
}

// TestOpenErrors: Open reports a data dir it cannot use and an address it
// cannot listen on or advertise.
func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"data dir is a file", testConfig("m", file, freeAddr(t), true), "raft"},
		{"bad advertise address", Config{ID: "m", DataDir: t.TempDir(), BindAddr: freeAddr(t), AdvertiseAddr: "not an address"}, "advertise"},
		{"address in use", testConfig("m", t.TempDir(), busy.Addr().String(), true), "listen"},
		{"unspecified advertise address", testConfig("m", t.TempDir(), "0.0.0.0:0", true), "listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Open(tc.cfg, state.New())
			if err == nil {
				n.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

// TestFSM: the FSM applies commands, reports decode and store errors as
// the entry's response, and ignores other log types.
func TestFSM(t *testing.T) {
	store := state.New()
	f := &fsm{store: store}
	data, err := proto.Marshal(putStack("s1", "one"))
	if err != nil {
		t.Fatal(err)
	}
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: data},
		{Index: 2, Type: raft.LogCommand, Data: data},           // conflict: already exists
		{Index: 3, Type: raft.LogCommand, Data: []byte{0xff}},   // undecodable
		{Index: 4, Type: raft.LogConfiguration, Data: []byte{}}, // not a command
		{Index: 5, Type: raft.LogNoop},
	})
	if out[0] != nil || !errors.Is(out[1].(error), state.ErrVersionConflict) || out[3] != nil || out[4] != nil {
		t.Fatalf("responses %v", out)
	}
	if err, ok := out[2].(error); !ok || !strings.Contains(err.Error(), "index 3") {
		t.Fatalf("undecodable entry response %v", out[2])
	}
	// The undecodable entry never reaches the store.
	if store.Index() != 2 {
		t.Errorf("store index %d, want 2 (the last decodable command)", store.Index())
	}

	// Snapshot and Restore go through the store's encoding.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil || !sink.closed {
		t.Fatalf("Persist: %v closed=%v", err, sink.closed)
	}
	snap.Release()
	store2 := state.New()
	if err := (&fsm{store: store2}).Restore(nopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if got := stacks(store2); len(got) != 1 || got[0] != "one" || store2.Index() != 2 {
		t.Fatalf("restored %v at %d", got, store2.Index())
	}
	failing := &memSink{fail: true}
	if err := snap.Persist(failing); err == nil || !failing.canceled {
		t.Fatalf("Persist to a failing sink = %v canceled=%v", err, failing.canceled)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	fail, closed, canceled bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.fail {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.canceled = true; return nil }

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// TestMapErr: hashicorp/raft's errors map to the two a caller acts on.
func TestMapErr(t *testing.T) {
	other := errors.New("boom")
	cases := []struct {
		in   error
		want error
	}{
		{nil, nil},
		{raft.ErrNotLeader, ErrNotLeader},
		{raft.ErrLeadershipLost, ErrNoQuorum},
		{raft.ErrEnqueueTimeout, ErrNoQuorum},
		{raft.ErrAbortedByRestore, ErrNoQuorum},
		{other, other},
	}
	n := &Node{}
	for _, tc := range cases {
		got := n.mapErr("op", tc.in)
		if tc.want == nil {
			if got != nil {
				t.Errorf("mapErr(nil) = %v", got)
			}
			continue
		}
		if !errors.Is(got, tc.want) || !strings.HasPrefix(got.Error(), "op: ") {
			t.Errorf("mapErr(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestTimeout: a context deadline bounds a proposal; without one the
// default applies; a passed deadline still gives raft a moment.
func TestTimeout(t *testing.T) {
	if got := timeout(context.Background()); got != defaultTimeout {
		t.Errorf("no deadline: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if got := timeout(ctx); got <= 59*time.Minute || got > time.Hour {
		t.Errorf("one hour deadline: %v", got)
	}
	past, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	if got := timeout(past); got != time.Millisecond {
		t.Errorf("passed deadline: %v", got)
	}
}

// TestSlogWriter: hclog's lines become slog records at the matching level,
// without the level tag and the "raft: " prefix.
func TestSlogWriter(t *testing.T) {
	cases := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[ERROR] raft: failed to contact\n", slog.LevelError, "failed to contact"},
		{"[WARN]  raft: heartbeat timeout reached\n", slog.LevelWarn, "heartbeat timeout reached"},
		{"[INFO]  raft: entering leader state\n", slog.LevelInfo, "entering leader state"},
		{"[DEBUG] raft: x\n", slog.LevelDebug, "x"},
		{"[TRACE] raft: y\r\n", slog.LevelDebug, "y"},
		{"no tag at all\n", slog.LevelInfo, "no tag at all"},
	}
	for _, tc := range cases {
		t.Run(tc.wantMsg, func(t *testing.T) {
			var got []slog.Record
			w := &slogWriter{l: slog.New(recordHandler{&got})}
			if n, err := w.Write([]byte(tc.line)); err != nil || n != len(tc.line) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			if len(got) != 1 || got[0].Level != tc.wantLevel || got[0].Message != tc.wantMsg {
				t.Fatalf("records %v, want %v %q", got, tc.wantLevel, tc.wantMsg)
			}
		})
	}
}

// recordHandler collects records.
type recordHandler struct{ out *[]slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	*h.out = append(*h.out, r)
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }
