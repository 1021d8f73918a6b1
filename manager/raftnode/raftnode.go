// Package raftnode runs one manager's member of the Raft cluster: the log and
// stable store in BoltDB behind a log cache, file snapshots, the transport
// (mutual TLS between managers, see TLS), and the FSM that feeds committed
// commands to the state store.
//
// The rest of the manager sees Raft through two calls: Propose, which commits
// a command and returns once the leader's own store has applied it (so the
// proposer reads its own write), and the leadership signal.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Errors Propose returns besides the store's own (state.ErrVersionConflict…).
var (
	// ErrNotLeader: this manager is not the leader; forward to the leader.
	ErrNotLeader = errors.New("this manager is not the Raft leader")
	// ErrNoQuorum: the command could not be committed, because too few
	// managers are reachable to form a majority. The command may or may not
	// commit later; it was not acknowledged.
	ErrNoQuorum = errors.New("no quorum: too few managers are reachable to commit; bring managers back, or check the network between them")
)

// Config configures a Raft member.
type Config struct {
	// ID is the member's Raft server ID: the manager's --name.
	ID string
	// DataDir holds raft.db and snapshots/.
	DataDir string
	// BindAddr is the TCP address the transport listens on, and
	// AdvertiseAddr the one peers dial (defaults to BindAddr).
	BindAddr      string
	AdvertiseAddr string
	// Bootstrap makes a new cluster with this member as its only voter when
	// DataDir holds no Raft state. Without it, the member waits to be added.
	Bootstrap bool
	// Timing; zero values take fast LAN defaults (see withDefaults).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one.
	SnapshotThreshold uint64
	// TLS makes the transport mutual TLS: the member accepts connections
	// only from, and dials only, managers of the cluster's CA.
	//
	// Nil keeps a plain TCP transport, which any host that can reach the
	// port may speak to. That is only until the manager passes its
	// certificates here; that change makes TLS mandatory and removes the
	// plain transport.
	TLS    *TLS
	Logger *slog.Logger
}

// withDefaults fills in timing suited to managers on one LAN. hashicorp/raft's
// defaults (1 s heartbeat and election timeouts) are tuned for WANs; on a LAN
// 500 ms still leaves a wide margin over round trips and fsyncs, and halves
// the time a dead leader blocks writes.
//
// The leader lease is as long as the heartbeat timeout. It decides how soon
// a leader that cannot reach a quorum steps down, not how soon a dead one is
// replaced; at 250 ms a busy leader (ten thousand agents' sessions on two
// cores) missed it now and then and stepped down for nothing, and every
// change of leader makes every agent reconnect.
func (c Config) withDefaults() Config {
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 500 * time.Millisecond
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = 500 * time.Millisecond
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = c.BindAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Node is a running Raft member.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	store     *state.Store
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	storage   *storageWatch
}

// Open starts a Raft member that applies committed commands to store.
func Open(cfg Config, store *state.Store) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.TLS.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft data dir: %w", err)
	}
	hlog := newHCLogger(cfg.Logger.With("component", "raft"))

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.Logger = hlog
	// Batch committed entries into one FSM call; the store takes its lock
	// once per batch instead of once per entry.
	rc.BatchApplyCh = true

	logStore, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	storage := &storageWatch{}
	cached, err := raft.NewLogCache(512, watchedLog{LogStore: logStore, w: storage})
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("create raft log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	advertise, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("resolve raft advertise address %q: %w", cfg.AdvertiseAddr, err)
	}
	transport, err := newTransport(cfg, advertise, hlog)
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("listen for raft on %s: %w", cfg.BindAddr, err)
	}

	n := &Node{cfg: cfg, store: store, logStore: logStore, transport: transport, storage: storage}
	stable := watchedStable{StableStore: logStore, w: storage}
	existing, err := raft.HasExistingState(cached, stable, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, &fsm{store: store}, cached, stable, snaps, transport)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if !existing && cfg.Bootstrap {
		boot := raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: transport.LocalAddr(), Suffrage: raft.Voter,
		}}}
		if err := r.BootstrapCluster(boot).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.Close()
			return nil, fmt.Errorf("bootstrap raft cluster: %w", err)
		}
	}
	return n, nil
}

// newTransport listens on cfg.BindAddr over TLS, or over plain TCP while
// cfg.TLS is nil.
func newTransport(cfg Config, advertise *net.TCPAddr, hlog hclog.Logger) (*raft.NetworkTransport, error) {
	if cfg.TLS == nil {
		return raft.NewTCPTransportWithLogger(cfg.BindAddr, advertise, transportMaxPool, transportTimeout, hlog)
	}
	stream, err := newTLSStream(cfg.BindAddr, advertise, cfg.TLS)
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: transportMaxPool, Timeout: transportTimeout, Logger: hlog,
	}), nil
}

func (n *Node) closeStores() {
	n.transport.Close()
	n.logStore.Close()
}

// Close leaves nothing running: it stops Raft and closes the transport and
// the log.
func (n *Node) Close() error {
	var errs []error
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	errs = append(errs, n.transport.Close(), n.logStore.Close())
	return errors.Join(errs...)
}

// HandOff passes the leadership to the most up-to-date follower, if this
// member leads, so that a manager stopped on purpose costs the cluster no
// election timeout. It waits for the transfer or until ctx ends.
func (n *Node) HandOff(ctx context.Context) error {
	if !n.IsLeader() {
		return nil
	}
	f := n.raft.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HasState reports whether dir holds Raft state from an earlier run.
func HasState(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	return err == nil
}

// Addr is the member's advertised Raft address.
func (n *Node) Addr() string { return string(n.transport.LocalAddr()) }

// IsLeader reports whether this member is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// State is the member's Raft state: Leader, Follower, Candidate or Shutdown.
func (n *Node) State() string { return n.raft.State().String() }

// ObserveLeader calls fn each time this member's view of the leader
// changes (to another member, or to none during an election), from the
// calling goroutine, until ctx ends. Raft drops observations a slow
// observer has not taken; fn reads the leader afresh each time, so a
// dropped one is covered by the next.
func (n *Node) ObserveLeader(ctx context.Context, fn func()) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			fn()
		}
	}
}

// LeaderCh delivers true when this member becomes leader and false when it
// stops being leader. Only one consumer may read it.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// Leader returns the leader's Raft address and ID, or empty strings when
// there is none.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// Term is the member's current Raft term.
func (n *Node) Term() uint64 {
	return n.raft.CurrentTerm()
}

// AppliedIndex is the index of the last entry applied to the store.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// Server is one member of the Raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Servers returns the current Raft configuration.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds (or re-addresses) a manager as a voter. Leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout(ctx)).Error()
	return n.mapErr("add raft voter "+id, err)
}

// RemoveServer removes a manager from the configuration. Leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	err := n.raft.RemoveServer(raft.ServerID(id), 0, timeout(ctx)).Error()
	return n.mapErr("remove raft server "+id, err)
}

// Barrier waits until every entry committed before the call is applied to
// the store; a new leader calls it before acting on its store.
func (n *Node) Barrier(ctx context.Context) error {
	return n.mapErr("raft barrier", n.raft.Barrier(timeout(ctx)).Error())
}

// Propose commits cmd and waits until the leader's store has applied it. It
// returns the command's Raft index, or the store's verdict (for example
// state.ErrVersionConflict), or ErrNotLeader or ErrNoQuorum.
func (n *Node) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	return n.ProposeAsync(ctx, cmd)()
}

// ProposeAsync hands cmd to Raft and returns at once; the function it
// returns waits for the commit and gives Propose's results. Commands
// proposed one after another commit in that order, so a proposer can keep
// several in flight, and Raft write them together, without losing their
// order.
func (n *Node) ProposeAsync(ctx context.Context, cmd *skiffpb.Command) func() (uint64, error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return func() (uint64, error) { return 0, fmt.Errorf("encode command: %w", err) }
	}
	f := n.raft.Apply(data, timeout(ctx))
	return func() (uint64, error) {
		if err := f.Error(); err != nil {
			return 0, n.mapErr("commit", err)
		}
		if err, ok := f.Response().(error); ok && err != nil {
			return f.Index(), err
		}
		return f.Index(), nil
	}
}

// mapErr turns hashicorp/raft's errors into the two a caller can act on.
func (n *Node) mapErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case n.storage.failure() != nil:
		// The commit failed, or leadership went, because the disk did.
		return fmt.Errorf("%s: %w", what, n.StorageError())
	case errors.Is(err, raft.ErrNotLeader):
		return fmt.Errorf("%s: %w", what, ErrNotLeader)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%s: %w", what, ErrNoQuorum)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// defaultTimeout bounds a proposal without a context deadline. A proposal
// that waits longer has almost certainly lost its quorum.
const defaultTimeout = 10 * time.Second

func timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return defaultTimeout
}

// fsm feeds committed entries to the store.
type fsm struct{ store *state.Store }

// ApplyBatch implements raft.BatchingFSM.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

// Apply implements raft.FSM. Its result is the store's error, or nil.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var cmd skiffpb.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		// Every member fails the same entry the same way, so the store
		// stays identical across members.
		return fmt.Errorf("decode command at index %d: %w", l.Index, err)
	}
	if err := f.store.Apply(l.Index, &cmd); err != nil {
		return err
	}
	return nil
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot()}, nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.Restore(rc)
}

type fsmSnapshot struct{ snap *state.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.snap.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot at index %d: %w", s.snap.Index, err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// newHCLogger routes hashicorp/raft's hclog output into slog.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclog.Info,
		Output:     &slogWriter{l: l},
		JSONFormat: false,
		// slog adds its own time.
		DisableTime: true,
	})
}

// slogWriter turns each line hclog writes into one slog record.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	level := slog.LevelInfo
	for tag, lv := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[INFO]": slog.LevelInfo, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
		if rest, ok := strings.CutPrefix(msg, tag); ok {
			level, msg = lv, rest
			break
		}
	}
	msg = strings.TrimPrefix(strings.TrimSpace(msg), "raft: ")
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}
