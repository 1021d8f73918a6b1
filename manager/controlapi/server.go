// Package controlapi serves the Control API on the leader: it validates what
// the CLI asks for, turns it into Raft commands, and answers reads from the
// state store. Followers never reach this code; the manager forwards their
// calls to the leader (see package manager).
package controlapi

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Raft is what the Control API needs of the local Raft member.
type Raft interface {
	Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error)
	// Members lists the managers in Raft's configuration.
	Members() ([]RaftMember, error)
	// Leader is the leader's Raft address and name; empty while there is
	// none.
	Leader() (addr, id string)
	Term() uint64
	AddVoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
}

// RaftMember is one manager in Raft's configuration.
type RaftMember struct {
	// Name is the manager's name, which is also its Raft ID.
	Name string
	// RaftAddr is where its Raft transport listens.
	RaftAddr string
	// Voter is false for a member that replicates the log but does not
	// vote.
	Voter bool
}

// Membership is what the Control API needs of the manager's view of its
// peers, to fill in MANAGER STATUS.
type Membership interface {
	// Reachable reports whether the manager named name answers.
	Reachable(name string) bool
}

// everyoneReachable is the Membership of a Server given none.
type everyoneReachable struct{}

func (everyoneReachable) Reachable(string) bool { return true }

// LogSource gathers container logs from the agents that run the tasks.
type LogSource interface {
	// SubscribeLogs asks the agents running tasks for their logs and calls
	// fn for each line until ctx ends or, without follow, every agent is
	// done.
	SubscribeLogs(ctx context.Context, tasks []*skiffpb.Task, follow bool, tail int64, fn func(*skiffpb.LogMessage) error) error
}

// Config wires a Server.
type Config struct {
	Store *state.Store
	Raft  Raft
	Logs  LogSource
	// Membership, when set, tells which managers answer; without it every
	// manager is reported reachable.
	Membership Membership
	Version    string
	Logger     *slog.Logger
}

// Server implements skiffpb.ControlServer.
type Server struct {
	skiffpb.UnimplementedControlServer
	cfg    Config
	store  *state.Store
	logger *slog.Logger
	// writeMu serialises the Control API's writes. Each write reads the
	// store, decides, and proposes; serialising them means two deploys can
	// never pick the same VNI or name, and keeps version conflicts for the
	// rarer case of racing the orchestrator.
	writeMu sync.Mutex
	now     func() time.Time
}

// New returns a Control API server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Membership == nil {
		cfg.Membership = everyoneReachable{}
	}
	return &Server{cfg: cfg, store: cfg.Store, logger: cfg.Logger, now: time.Now}
}

// propose commits actions and maps the outcome to a gRPC status.
func (s *Server) propose(ctx context.Context, actions ...*skiffpb.StoreAction) (uint64, error) {
	if len(actions) == 0 {
		return s.store.Index(), nil
	}
	idx, err := s.cfg.Raft.Propose(ctx, &skiffpb.Command{Actions: actions})
	if err != nil {
		return 0, toStatus(err)
	}
	return idx, nil
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func notFound(kind, name string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, name)
}

// meta returns the bookkeeping for a write of o: the version it was read at
// (0 for a create) and the leader's timestamps.
func (s *Server) meta(old *skiffpb.Meta) *skiffpb.Meta {
	now := s.now().UnixNano()
	m := &skiffpb.Meta{Version: old.GetVersion(), CreatedAt: old.GetCreatedAt(), UpdatedAt: now}
	if m.CreatedAt == 0 {
		m.CreatedAt = now
	}
	return m
}

// resolve finds one object by exact ID, exact name, or unique ID prefix.
func resolve[T interface{ GetId() string }](kind, ref string, all []T, name func(T) string) (T, error) {
	o, err := state.ResolveID(ref, all, name)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return o, notFound(kind, ref)
	case err != nil:
		return o, invalid("%s %q: %v; give more of the ID", kind, ref, err)
	}
	return o, nil
}
