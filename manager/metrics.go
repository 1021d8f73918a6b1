package manager

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffhq/skiff/internal/debugserver"
	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// metrics are the manager's Prometheus metrics, on its own registry, served
// by a debug server when --metrics-addr is set.
type metrics struct {
	registry          *prometheus.Registry
	schedulingLatency prometheus.Histogram
}

// newMetrics registers the manager's metrics; the state collector reads
// raft and store only at scrape time.
func newMetrics(raft *raftnode.Node, store *state.Store) *metrics {
	reg := prometheus.NewRegistry()
	mt := &metrics{
		registry: reg,
		schedulingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skiff_scheduling_latency_seconds",
			Help:    "Time from a task's creation until the scheduler placed it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
	reg.MustRegister(mt.schedulingLatency, newStateCollector(raft, store),
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return mt
}

// listenDebug binds the metrics and pprof endpoints that cfg asks for,
// each on its own listener so that the profiler is never exposed by
// accident along with the metrics.
//
// The gauge of the dispatcher's sessions is registered here rather than in
// newMetrics, because the dispatcher is created after the metrics.
func (m *Manager) listenDebug() ([]*debugserver.Server, error) {
	var cfgs []debugserver.Config
	if m.cfg.MetricsAddr != "" {
		sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "skiff_dispatcher_sessions",
			Help: "Agents holding a session with this manager (0 unless it leads).",
		}, func() float64 { return float64(m.dispatch.Sessions()) })
		if err := m.metrics.registry.Register(sessions); err != nil {
			return nil, fmt.Errorf("register the sessions gauge: %w", err)
		}
		cfgs = append(cfgs, debugserver.Config{Addr: m.cfg.MetricsAddr, Metrics: m.metrics.registry, Logger: m.logger})
	}
	if m.cfg.PprofAddr != "" {
		cfgs = append(cfgs, debugserver.Config{Addr: m.cfg.PprofAddr, Pprof: true, Logger: m.logger})
	}
	var servers []*debugserver.Server
	for _, c := range cfgs {
		s, err := debugserver.Listen(c)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return nil, err
		}
		servers = append(servers, s)
	}
	return servers, nil
}

// stateCollector reports the store and Raft at scrape time, so the metrics
// cost nothing between scrapes.
type stateCollector struct {
	raft  *raftnode.Node
	store *state.Store

	raftState, raftIndex, tasks, nodes *prometheus.Desc
}

func newStateCollector(raft *raftnode.Node, store *state.Store) *stateCollector {
	return &stateCollector{
		raft:      raft,
		store:     store,
		raftState: prometheus.NewDesc("skiff_raft_state", "1 for this manager's current Raft state.", []string{"state"}, nil),
		raftIndex: prometheus.NewDesc("skiff_raft_applied_index", "Index of the last Raft entry applied to the store.", nil, nil),
		tasks:     prometheus.NewDesc("skiff_tasks", "Tasks by observed state.", []string{"state"}, nil),
		nodes:     prometheus.NewDesc("skiff_nodes", "Nodes by state.", []string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.raftState
	ch <- c.raftIndex
	ch <- c.tasks
	ch <- c.nodes
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.raftState, prometheus.GaugeValue, 1, c.raft.State())
	ch <- prometheus.MustNewConstMetric(c.raftIndex, prometheus.GaugeValue, float64(c.raft.AppliedIndex()))
	tasks := map[skiffpb.TaskState]int{}
	nodes := map[skiffpb.NodeState]int{}
	c.store.View(func(tx state.ReadTx) {
		tx.EachTask(func(t *skiffpb.Task) bool { tasks[t.GetStatus().GetState()]++; return true })
		for _, n := range tx.Nodes() {
			nodes[n.GetStatus().GetState()]++
		}
	})
	for st, n := range tasks {
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(n), st.String())
	}
	for st, n := range nodes {
		ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(n), st.String())
	}
}
