package mesh

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// stats are one published port's counters. They live and die with the port,
// so a port published again starts from zero, which Prometheus reads as a
// counter reset.
type stats struct {
	// opened counts TCP connections accepted, or UDP flows opened.
	opened atomic.Uint64
	// active is the TCP connections or UDP flows open now.
	active atomic.Int64
	// rejected counts TCP connections reset for want of a reachable
	// backend, or UDP datagrams dropped (no backend, or the flow table full).
	rejected atomic.Uint64
	// dialFailures counts failed TCP connection attempts to backends.
	dialFailures atomic.Uint64
	// in counts bytes from clients to tasks, out from tasks to clients.
	// TCP connections add theirs when they end.
	in, out atomic.Uint64
}

var (
	descOpened    = prometheus.NewDesc("skiff_mesh_connections_total", "TCP connections accepted and UDP flows opened on a published port.", []string{"protocol", "port", "service"}, nil)
	descActive    = prometheus.NewDesc("skiff_mesh_connections_active", "TCP connections and UDP flows open on a published port.", []string{"protocol", "port", "service"}, nil)
	descRejected  = prometheus.NewDesc("skiff_mesh_rejected_total", "TCP connections reset and UDP datagrams dropped for want of a backend or flow slot.", []string{"protocol", "port", "service"}, nil)
	descDialFails = prometheus.NewDesc("skiff_mesh_dial_failures_total", "Failed TCP connection attempts to a backend task.", []string{"protocol", "port", "service"}, nil)
	descBytes     = prometheus.NewDesc("skiff_mesh_bytes_total", "Bytes forwarded, by direction: in is client to task.", []string{"protocol", "port", "service", "direction"}, nil)
)

// Describe implements prometheus.Collector, so the agent can register the
// mesh in its registry as it is.
func (m *Mesh) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpened, descActive, descRejected, descDialFails, descBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one series per published port.
func (m *Mesh) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	ports := make([]*published, 0, len(m.servers))
	for _, s := range m.servers {
		ports = append(ports, s.base())
	}
	m.mu.Unlock()

	for _, p := range ports {
		proto, port, svc := p.key.proto, strconv.Itoa(int(p.key.port)), p.route.Load().service
		s := &p.stats
		ch <- prometheus.MustNewConstMetric(descOpened, prometheus.CounterValue, float64(s.opened.Load()), proto, port, svc)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.active.Load()), proto, port, svc)
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(s.rejected.Load()), proto, port, svc)
		ch <- prometheus.MustNewConstMetric(descDialFails, prometheus.CounterValue, float64(s.dialFailures.Load()), proto, port, svc)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.in.Load()), proto, port, svc, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.out.Load()), proto, port, svc, "out")
	}
}
