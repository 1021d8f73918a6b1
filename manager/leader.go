package manager

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/skiffhq/skiff/manager/orchestrator"
	"github.com/skiffhq/skiff/manager/placement"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// leadWhileLeader runs the leader's components for as long as this manager
// leads, and stops them the moment it does not.
func (m *Manager) leadWhileLeader(ctx context.Context) {
	leaderCh := m.raft.LeaderCh()
	term := &leaderTerm{}
	defer term.end()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-leaderCh:
			term.end()
			if !isLeader {
				m.logger.Info("lost leadership")
				m.announceLead(0)
				continue
			}
			t := m.raft.Term()
			m.logger.Info("became leader", "term", t)
			term.start(ctx, m.lead)
			m.announceLead(t)
		}
	}
}

// announceLead advertises by gossip that this manager leads in term t (0:
// that it does not), so that agents come to it at once. The dispatcher of
// a term that has not started serving yet holds their sessions until it
// does.
func (m *Manager) announceLead(t uint64) {
	// UpdateNode returns once the news is on its way to one member; a
	// leader cut off from everyone should not wait long for that.
	if err := m.pool.SetLead(t, 250*time.Millisecond); err != nil {
		m.logger.Debug("announce leadership by gossip", "term", t, "error", err)
	}
}

// leaderTerm is the running leader components of one term.
type leaderTerm struct {
	stop context.CancelFunc
	done chan struct{}
}

func (t *leaderTerm) start(ctx context.Context, f func(context.Context)) {
	ctx, t.stop = context.WithCancel(ctx)
	t.done = make(chan struct{})
	go func() { defer close(t.done); f(ctx) }()
}

// end stops the term's components and waits until they have stopped, so
// that no decision of an old term is made after leadership is lost.
func (t *leaderTerm) end() {
	if t.stop == nil {
		return
	}
	t.stop()
	<-t.done
	t.stop = nil
}

// lead is one leader term.
func (m *Manager) lead(ctx context.Context) {
	// Apply everything the previous leader committed before deciding
	// anything from the store.
	if err := m.raft.Barrier(ctx); err != nil {
		m.logger.Error("leader barrier failed; waiting for the next term", "error", err)
		return
	}
	if err := m.ensureCluster(ctx); err != nil {
		m.logger.Error("initialise cluster", "error", err)
		return
	}
	if err := m.control.RegisterManager(ctx, m.cfg.Name, m.raft.Addr(), m.cfg.APIAddr()); err != nil {
		m.logger.Warn("record this manager's node", "error", err)
	}
	addrs := newAddressBook(m.store, m.logger)
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(addrs.run)
	run(m.dispatch.Run)
	run(orchestrator.New(orchestrator.Config{Store: m.store, Raft: m.raft, IPAM: addrs.ipam, Logger: m.logger}).Run)
	run((&gossipKeyRotator{store: m.store, raft: m.raft, settle: gossipKeySettle, logger: m.logger}).run)
	run(placement.New(placement.Config{Store: m.store, Raft: m.raft, IPAM: addrs.ipam, Logger: m.logger, Latency: m.metrics.schedulingLatency}).Run)
	wg.Wait()
}

// ensureCluster writes the cluster object on the first leadership of a new
// cluster: the settings, CA and secrets its first manager created, with
// that manager's node.
func (m *Manager) ensureCluster(ctx context.Context) error {
	var exists bool
	m.store.View(func(tx state.ReadTx) { exists = tx.Cluster() != nil })
	if exists {
		m.dropPending()
		return nil
	}
	cmd, err := m.pendingCommand()
	if err != nil {
		return err
	}
	if cmd == nil {
		return errors.New("the store holds no cluster, and this manager did not create one: its Raft log belongs to another cluster")
	}
	now := time.Now().UnixNano()
	c := cmd.GetActions()[0].GetPutCluster()
	c.Meta = &skiffpb.Meta{CreatedAt: now, UpdatedAt: now}
	c.DefaultAddrPool, c.SubnetSize, c.TaskHistoryLimit = m.cfg.DefaultAddrPool, uint32(m.cfg.SubnetSize), 5
	c.NodeDownGrace, c.HeartbeatPeriod = int64(m.cfg.DownGrace), int64(m.cfg.HeartbeatPeriod)
	if _, err := m.raft.Propose(ctx, cmd); err != nil && !errors.Is(err, state.ErrVersionConflict) {
		return err
	}
	m.dropPending()
	return nil
}

// dropPending removes the new cluster's first command once the store holds
// it.
func (m *Manager) dropPending() {
	if err := os.Remove(m.pendingPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.logger.Warn("remove the new cluster's pending settings", "path", m.pendingPath(), "error", err)
	}
}
