package mesh

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSetPortConflict: a port something else holds is reported by number
// and cause, the others are served, and a later Set takes the port once it
// is free.
func TestSetPortConflict(t *testing.T) {
	servers := startTCP(t, 1, identity)
	bs := newBackendSet()
	bs.set("s_web", servers.addrs...)
	m := newTestMesh(t, Config{Backends: bs.get})

	taken, free := freePort(t, meshIP), freePort(t, meshIP)
	tcpHolder, err := net.Listen("tcp4", netip.AddrPortFrom(meshIP, taken).String())
	if err != nil {
		t.Fatal(err)
	}
	udpHolder, err := net.ListenPacket("udp4", netip.AddrPortFrom(meshIP, taken).String())
	if err != nil {
		t.Fatal(err)
	}
	ports := []Port{
		{Protocol: "tcp", Published: taken, Target: servers.port, Service: "s_web"},
		{Protocol: "udp", Published: taken, Target: servers.port, Service: "s_web"},
		{Protocol: "tcp", Published: free, Target: servers.port, Service: "s_web"},
	}

	err = m.Set(ports)
	if err == nil {
		t.Fatal("Set succeeded on a port held by another socket")
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q is not EADDRINUSE", err)
	}
	for _, want := range []string{strconv.Itoa(int(taken)) + ":", "/tcp", "/udp", `"s_web"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	var pe *PortError
	if !errors.As(err, &pe) || pe.Port.Published != taken {
		t.Errorf("error %v holds no PortError for port %d", err, taken)
	}
	if got := ask(t, netip.AddrPortFrom(meshIP, free)); got != servers.addrs[0].String() {
		t.Errorf("the free port answered %q", got)
	}

	tcpHolder.Close()
	udpHolder.Close()
	if err := m.Set(ports); err != nil {
		t.Fatalf("Set once the port is free: %v", err)
	}
	if got := ask(t, netip.AddrPortFrom(meshIP, taken)); got != servers.addrs[0].String() {
		t.Errorf("the freed port answered %q", got)
	}
}

func TestSetRejectsInvalidPorts(t *testing.T) {
	servers := startTCP(t, 1, identity)
	bs := newBackendSet()
	bs.set("s_web", servers.addrs...)
	m := newTestMesh(t, Config{Backends: bs.get})
	good := Port{Protocol: "tcp", Published: freePort(t, meshIP), Target: servers.port, Service: "s_web"}

	bad := []Port{
		{Protocol: "sctp", Published: 1, Target: 1, Service: "s"},
		{Protocol: "tcp", Published: 0, Target: 1, Service: "s"},
		{Protocol: "tcp", Published: 1, Target: 0, Service: "s"},
		{Protocol: "tcp", Published: 1, Target: 1, Service: ""},
		{Protocol: "tcp", Published: good.Published, Target: 1, Service: "s_other"}, // the port is good's
	}
	// good appears twice: listing a port twice the same way is no error.
	err := m.Set(append([]Port{good, good}, bad...))
	var pes []*PortError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var pe *PortError
		if !errors.As(e, &pe) {
			t.Fatalf("error %v is not a PortError", e)
		}
		pes = append(pes, pe)
	}
	if len(pes) != len(bad) {
		t.Fatalf("got %d errors, want %d: %v", len(pes), len(bad), err)
	}
	for i, pe := range pes {
		if pe.Port != bad[i] {
			t.Errorf("error %d is about %v, want %v", i, pe.Port, bad[i])
		}
	}
	if got := ask(t, netip.AddrPortFrom(meshIP, good.Published)); got != servers.addrs[0].String() {
		t.Errorf("the valid port answered %q", got)
	}
}

// TestSetIsIdempotent: the same ports again keep the same listeners, with
// their counters and connections.
func TestSetIsIdempotent(t *testing.T) {
	servers := startTCP(t, 1, echo)
	m, _, addr := tcpSetup(t, Config{}, servers)
	port := Port{Protocol: "tcp", Published: addr.Port(), Target: servers.port, Service: "s_web"}
	before := portStats(t, m, "tcp", addr.Port())

	for range 3 {
		mustSet(t, m, port)
	}
	if portStats(t, m, "tcp", addr.Port()) != before {
		t.Error("Set with the same port replaced its listener")
	}
}

func TestMetrics(t *testing.T) {
	servers := startTCP(t, 2, identity)
	m, bs, addr := tcpSetup(t, Config{}, servers)
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}

	for range 4 {
		ask(t, addr)
	}
	bs.set("s_web")
	c, err := net.Dial("tcp4", addr.String())
	if err == nil {
		mustBeClosed(t, c)
		c.Close()
	}
	st := portStats(t, m, "tcp", addr.Port())
	eventually(t, "the connections to end", func() bool { return st.active.Load() == 0 })

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	labels := ",port=" + strconv.Itoa(int(addr.Port())) + ",protocol=tcp,service=s_web"
	want := map[string]float64{
		"skiff_mesh_connections_total" + labels:         5,
		"skiff_mesh_connections_active" + labels:        0,
		"skiff_mesh_rejected_total" + labels:            1,
		"skiff_mesh_dial_failures_total" + labels:       0,
		"skiff_mesh_bytes_total,direction=in" + labels:  0,
		"skiff_mesh_bytes_total,direction=out" + labels: float64(4 * len("127.0.0.2")),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d series, want %d: %v", len(got), len(want), got)
	}
}

func TestNewPanicsWithoutBackends(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without Backends did not panic")
		}
	}()
	New(Config{})
}
