// Package host is the overlay on one host. It keeps the host's data plane,
// its share of the endpoint table, its embedded DNS servers and its routing
// mesh in step with two inputs from the agent: the networks the leader
// attached the host to, and the tasks it runs.
//
// The flow, for a task on this host:
//
//  1. the leader allocated the task an address, and this host an address in
//     the task's network; the host builds the network's bridge and VXLAN
//     device and starts the network's DNS server on its own address;
//  2. the Docker executor starts the task's container, whose network init
//     waits, and calls Plumb, which moves a veth with the task's address
//     into the container's namespace; the init then runs the program;
//  3. when the task runs, its endpoint is published by gossip; every host
//     in the network programs a neighbour entry for it, its DNS answers its
//     name, and the mesh on every host sends published-port traffic to it;
//  4. when it stops, the endpoint is withdrawn and all of that is undone.
package host

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/overlay"
	"github.com/skiffhq/skiff/overlay/dataplane"
	"github.com/skiffhq/skiff/overlay/endpoints"
	"github.com/skiffhq/skiff/overlay/hostfw"
	"github.com/skiffhq/skiff/overlay/mesh"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Config configures a host's overlay.
type Config struct {
	// Node is the host's node name.
	Node string
	// VTEP is the host's underlay address: its advertise address.
	VTEP netip.Addr
	// Upstreams are the resolvers the embedded DNS forwards other names to
	// (host:port); empty means those of the host's /etc/resolv.conf.
	Upstreams []string
	Logger    *slog.Logger
}

// Host is one host's overlay. Its methods are safe for concurrent use.
type Host struct {
	cfg    Config
	logger *slog.Logger
	plane  *dataplane.Plane
	table  *endpoints.Table
	mesh   *mesh.Mesh
	dns    *dnsServers

	mu sync.Mutex
	// networks are the networks present on this host, by ID.
	networks map[string]*network
	// tasks are the tasks this host holds a network for, by ID.
	tasks map[string]*task
	// synced is set once a full assignment set has been seen, after which
	// stale devices of an earlier run can be told apart and removed.
	synced bool
	// direct queues this host's endpoint records for sending straight to
	// the other agents (see endpoints.Config.Direct).
	direct chan []byte
	pool   *gossip.Pool
	// backends indexes the live endpoints of services that publish ports:
	// service → addresses, for the mesh.
	backends map[string]map[netip.Addr]bool
	ports    map[string][]overlay.Port
	// hostPorts are the host-mode ports of the tasks running here, by
	// task: they answer on this host only, and only for that task.
	hostPorts map[string]hostPorts
	// meshPorts is what the mesh was last given.
	meshPorts []mesh.Port
}

// hostPorts is a task's host-mode ports and the address they go to.
type hostPorts struct {
	ports []overlay.Port
	addr  netip.Addr
}

// network is an overlay network as this host knows it.
type network struct {
	net *skiffpb.Network
	// hostAddr is this host's address in the network; the network's
	// devices exist once it is known.
	hostAddr netip.Prefix
	built    bool
	// attached: the leader gave this host an address here.
	attached bool
}

// task is a task whose container this host plumbed or adopted.
type task struct {
	a         *skiffpb.Assignment
	published bool
}

// New prepares the overlay of the host: it reads the underlay but changes
// nothing until the agent reports networks and tasks.
func New(cfg Config) (*Host, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Host{
		cfg:      cfg,
		logger:   cfg.Logger.With("component", "overlay"),
		networks: map[string]*network{},
		tasks:    map[string]*task{},
		backends: map[string]map[netip.Addr]bool{},
		ports:    map[string][]overlay.Port{},
		direct:   make(chan []byte, 1024),

		hostPorts: map[string]hostPorts{},
	}
	pcfg := dataplane.Config{VTEP: cfg.VTEP, Logger: cfg.Logger}
	fw, err := hostfw.New(dataplane.DefaultPrefix+"-br-", cfg.Logger)
	switch {
	case err == nil:
		pcfg.Firewall = fw
	case errors.Is(err, hostfw.ErrNoIptables):
		// Nothing to open: without iptables no FORWARD policy of its
		// drops anything.
		cfg.Logger.Info("no iptables on this host; skiff adds no accept rules", "error", err)
	default:
		return nil, err
	}
	plane, err := dataplane.New(pcfg)
	if err != nil {
		return nil, fmt.Errorf("overlay data plane: %w", err)
	}
	h.plane = plane
	table, err := endpoints.New(endpoints.Config{Node: cfg.Node, OnChange: h.onChange, Direct: h.queueDirect, Logger: cfg.Logger})
	if err != nil {
		plane.Close()
		return nil, fmt.Errorf("overlay endpoint table: %w", err)
	}
	h.table = table
	spread := fnv.New64a()
	spread.Write([]byte(cfg.Node))
	h.mesh = mesh.New(mesh.Config{Backends: h.meshBackends, Spread: spread.Sum64(), Logger: cfg.Logger})
	h.dns = newDNSServers(h, cfg.Upstreams, cfg.Logger)
	return h, nil
}

// Delegate carries the endpoint table in the gossip pool's messages.
func (h *Host) Delegate() memberlist.Delegate { return h.table.Delegate() }

// HandleGossip follows the pool's membership: a dead host's endpoints go at
// once.
func (h *Host) HandleGossip(ev gossip.Event) { h.table.HandleEvent(ev) }

// NodesDown takes the leader's Down verdicts (a session's DownNodes): those
// nodes' tasks get no more traffic from this host, by DNS or the mesh, and
// their addresses are unprogrammed, until the leader holds them up again.
func (h *Host) NodesDown(names []string) { h.table.SetDown(names) }

// SetPool gives the overlay the gossip pool it rides on, once it started.
func (h *Host) SetPool(p *gossip.Pool) {
	h.mu.Lock()
	h.pool = p
	h.mu.Unlock()
	h.table.SetNumNodes(p.Memberlist().NumMembers)
}

// queueDirect is endpoints.Config.Direct: it only queues, since the table
// calls it with its lock held; a full queue drops the record, which gossip
// and push/pull still carry.
func (h *Host) queueDirect(msg []byte) {
	select {
	case h.direct <- msg:
	default:
	}
}

// sendDirect sends queued records to the other agents until ctx ends.
func (h *Host) sendDirect(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-h.direct:
			h.mu.Lock()
			pool := h.pool
			h.mu.Unlock()
			if pool != nil {
				pool.SendToAgents(msg)
			}
		}
	}
}

// Mesh exposes the routing mesh, for its metrics.
func (h *Host) Mesh() *mesh.Mesh { return h.mesh }

// Run keeps the overlay going until ctx ends. The devices stay: tasks keep
// their network while the agent restarts.
func (h *Host) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); h.table.Run(ctx) }()
	go func() { defer wg.Done(); h.sendDirect(ctx) }()
	go func() { defer wg.Done(); _ = h.mesh.Run(ctx) }()
	go func() { defer wg.Done(); h.keepRules(ctx) }()
	<-ctx.Done()
	h.dns.closeAll()
	wg.Wait()
	h.plane.Close()
}

// rulesCheck is how often the host's firewall rules are checked against
// the overlay's devices (see dataplane.Plane.SyncRules).
const rulesCheck = 30 * time.Second

// keepRules puts the overlay's firewall rules back when something else
// removed them, until ctx ends.
func (h *Host) keepRules(ctx context.Context) {
	tick := time.NewTicker(rulesCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := h.plane.SyncRules(); err != nil {
			h.logger.Warn("check the overlay's firewall rules", "error", err)
		}
	}
}

// Assigned takes the leader's view of the host's networks, and on a full
// assignment set, of everything the host should hold: anything else left
// from an earlier run is removed.
func (h *Host) Assigned(as *skiffpb.Assignments) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setAttachmentsLocked(as.GetNodeAttachments(), as.GetNodeNetworks())
	if !as.GetFull() {
		return
	}
	keepTasks := map[string]bool{}
	keepNets := map[uint32]bool{}
	for _, a := range as.GetUpdated() {
		keepTasks[a.GetTask().GetId()] = true
		for _, n := range a.GetNetworks() {
			keepNets[n.GetVni()] = true
		}
	}
	for _, n := range h.networks {
		keepNets[n.net.GetVni()] = true
	}
	if !h.synced {
		if err := h.plane.Cleanup(keepNets, keepTasks); err != nil {
			h.logger.Warn("clean up devices of an earlier run", "error", err)
		}
		h.synced = true
		h.table.Reconciled()
	}
}

// setAttachmentsLocked makes the host's networks match the leader's list.
func (h *Host) setAttachmentsLocked(atts []*skiffpb.NetworkAttachment, nets []*skiffpb.Network) {
	byID := map[string]*skiffpb.Network{}
	for _, n := range nets {
		byID[n.GetId()] = n
	}
	seen := map[string]bool{}
	for _, a := range atts {
		n := byID[a.GetNetworkId()]
		addr, err := netip.ParsePrefix(a.GetAddress())
		if n == nil || err != nil {
			continue
		}
		seen[n.GetId()] = true
		nw := h.networks[n.GetId()]
		if nw == nil {
			nw = &network{net: n}
			h.networks[n.GetId()] = nw
		}
		nw.attached = true
		if nw.hostAddr != addr {
			nw.hostAddr = addr
			nw.built = false
		}
		h.ensureNetworkLocked(nw)
	}
	for id, nw := range h.networks {
		if !seen[id] {
			nw.attached = false
			h.gcNetworkLocked(id)
		}
	}
}

// ensureNetworkLocked builds a network's devices, its host endpoint and its
// DNS server, and programs the neighbours it already knows of.
func (h *Host) ensureNetworkLocked(nw *network) {
	if nw.built || !nw.hostAddr.IsValid() {
		return
	}
	vni := nw.net.GetVni()
	if err := h.plane.EnsureNetwork(dataplane.Network{ID: nw.net.GetId(), VNI: vni, HostAddr: nw.hostAddr, Internal: nw.net.GetSpec().GetInternal()}); err != nil {
		h.logger.Error("build network", "network", nw.net.GetSpec().GetName(), "vni", vni, "error", err)
		return
	}
	nw.built = true
	if err := h.table.Publish(overlay.Endpoint{NetworkID: nw.net.GetId(), VNI: vni, IP: nw.hostAddr.Addr(), VTEP: h.cfg.VTEP}); err != nil {
		h.logger.Warn("publish host endpoint", "network", nw.net.GetSpec().GetName(), "error", err)
	}
	for _, e := range h.table.Endpoints(nw.net.GetId()) {
		h.programLocked(e)
	}
	h.dns.start(nw.net.GetId(), nw.hostAddr.Addr())
	h.logger.Info("network ready", "network", nw.net.GetSpec().GetName(), "vni", vni, "host_addr", nw.hostAddr)
}

// gcNetworkLocked removes a network that neither the leader nor any task
// still needs here.
func (h *Host) gcNetworkLocked(id string) {
	nw := h.networks[id]
	if nw == nil || nw.attached {
		return
	}
	for _, t := range h.tasks {
		for _, na := range t.a.GetTask().GetNetworks() {
			if na.GetNetworkId() == id {
				return
			}
		}
	}
	h.dns.stop(id)
	if nw.hostAddr.IsValid() {
		h.table.Withdraw(id, nw.hostAddr.Addr())
	}
	if err := h.plane.RemoveNetwork(nw.net.GetVni()); err != nil {
		h.logger.Warn("remove network", "network", nw.net.GetSpec().GetName(), "error", err)
	}
	delete(h.networks, id)
	h.logger.Info("network removed", "network", nw.net.GetSpec().GetName())
}

// Plumb connects a task's container to its networks; the Docker executor
// calls it after starting the container and before its program runs.
func (h *Host) Plumb(ctx context.Context, a *skiffpb.Assignment, nsPath string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	byID := map[string]*skiffpb.Network{}
	for _, n := range a.GetNetworks() {
		byID[n.GetId()] = n
	}
	// The task leaves the cluster through its host's address on its first
	// network that is not internal, as Docker routes a container through
	// the gateway of its first network that has one.
	gateway := false
	for i, na := range a.GetTask().GetNetworks() {
		nw := h.networks[na.GetNetworkId()]
		if nw == nil {
			n := byID[na.GetNetworkId()]
			if n == nil {
				return fmt.Errorf("task %s: network %s is not in its assignment", a.GetTask().GetId(), na.GetNetworkId())
			}
			nw = &network{net: n}
			h.networks[n.GetId()] = nw
		}
		if !nw.hostAddr.IsValid() {
			return fmt.Errorf("this host has no address in network %s yet; the leader attaches it when it places the task", nw.net.GetSpec().GetName())
		}
		h.ensureNetworkLocked(nw)
		if !nw.built {
			return fmt.Errorf("network %s could not be built on this host", nw.net.GetSpec().GetName())
		}
		addr, err := netip.ParsePrefix(na.GetAddress())
		if err != nil {
			return fmt.Errorf("task %s: address %q: %w", a.GetTask().GetId(), na.GetAddress(), err)
		}
		att := dataplane.Attachment{
			TaskID: a.GetTask().GetId(), VNI: nw.net.GetVni(), NetNSPath: nsPath, Addr: addr, IfName: fmt.Sprintf("eth%d", i),
		}
		if !gateway && !nw.net.GetSpec().GetInternal() {
			att.Gateway, gateway = nw.hostAddr.Addr(), true
		}
		if err := h.plane.Attach(att); err != nil {
			return err
		}
	}
	if h.tasks[a.GetTask().GetId()] == nil {
		h.tasks[a.GetTask().GetId()] = &task{a: a}
	}
	return nil
}

// Unplumb disconnects a task's container and forgets the task.
func (h *Host) Unplumb(ctx context.Context, taskID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.withdrawLocked(taskID)
	err := h.plane.Detach(taskID)
	t := h.tasks[taskID]
	delete(h.tasks, taskID)
	if t != nil {
		for _, na := range t.a.GetTask().GetNetworks() {
			h.gcNetworkLocked(na.GetNetworkId())
		}
	}
	if err != nil {
		return fmt.Errorf("detach task %s: %w", taskID, err)
	}
	return nil
}

// Nameservers returns this host's DNS address in the task's first network:
// the resolver its containers use.
func (h *Host) Nameservers(a *skiffpb.Assignment) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, na := range a.GetTask().GetNetworks() {
		if nw := h.networks[na.GetNetworkId()]; nw != nil && nw.hostAddr.IsValid() {
			return []string{nw.hostAddr.Addr().String()}
		}
	}
	return nil
}

// TaskStatus publishes a task's endpoints while it runs and withdraws them
// otherwise: DNS and the mesh only ever point at running tasks.
func (h *Host) TaskStatus(a *skiffpb.Assignment, st *skiffpb.TaskStatus) {
	if a == nil || len(a.GetTask().GetNetworks()) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	id := a.GetTask().GetId()
	running := st.GetState() == skiffpb.TaskState_TASK_STATE_RUNNING &&
		a.GetTask().GetDesiredState() <= skiffpb.TaskState_TASK_STATE_RUNNING
	if !running {
		h.withdrawLocked(id)
		return
	}
	t := h.tasks[id]
	if t == nil {
		// A task adopted after an agent restart: its container is plumbed
		// already. Only a running task is adopted, so that a late report
		// of a stopped task cannot bring back one that was unplumbed.
		t = &task{a: a}
		h.tasks[id] = t
	}
	eps := taskEndpoints(a, h.cfg.VTEP)
	for _, e := range eps {
		if err := h.table.Publish(e); err != nil {
			h.logger.Warn("publish task endpoint", "task", id, "error", err)
		}
	}
	if ports := publishedPorts(a.GetSpec(), skiffpb.PublishMode_PUBLISH_MODE_HOST); len(ports) > 0 && len(eps) > 0 {
		h.hostPorts[id] = hostPorts{ports: ports, addr: eps[0].IP}
		h.syncMeshLocked()
	}
	t.published = true
}

func (h *Host) withdrawLocked(taskID string) {
	t := h.tasks[taskID]
	if t == nil || !t.published {
		return
	}
	if _, ok := h.hostPorts[taskID]; ok {
		delete(h.hostPorts, taskID)
		h.syncMeshLocked()
	}
	for _, e := range taskEndpoints(t.a, h.cfg.VTEP) {
		h.table.Withdraw(e.NetworkID, e.IP)
	}
	t.published = false
}

// taskEndpoints are a task's endpoints, one per network, with what the DNS
// and the mesh need to know of it.
func taskEndpoints(a *skiffpb.Assignment, vtep netip.Addr) []overlay.Endpoint {
	spec := a.GetSpec()
	stack := a.GetTask().GetStack()
	short := strings.TrimPrefix(spec.GetName(), stack+"_")
	var links map[string]string
	for _, l := range spec.GetLinks() {
		if links == nil {
			links = map[string]string{}
		}
		alias := l.GetAlias()
		if alias == "" {
			alias = l.GetService()
		}
		links[alias] = l.GetService()
	}
	published := publishedPorts(spec, skiffpb.PublishMode_PUBLISH_MODE_INGRESS)
	var out []overlay.Endpoint
	for _, na := range a.GetTask().GetNetworks() {
		addr, err := netip.ParsePrefix(na.GetAddress())
		if err != nil {
			continue
		}
		var vni uint32
		for _, n := range a.GetNetworks() {
			if n.GetId() == na.GetNetworkId() {
				vni = n.GetVni()
			}
		}
		out = append(out, overlay.Endpoint{
			NetworkID: na.GetNetworkId(), VNI: vni, IP: addr.Addr(), VTEP: vtep,
			TaskID: a.GetTask().GetId(), Service: spec.GetName(), Stack: stack, ShortName: short,
			Aliases: na.GetAliases(), Links: links, Published: published,
		})
	}
	return out
}

// publishedPorts lists a spec's published ports of one mode.
func publishedPorts(spec *skiffpb.ServiceSpec, mode skiffpb.PublishMode) []overlay.Port {
	var out []overlay.Port
	for _, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishMode() != mode || p.GetPublishedPort() == 0 {
			continue
		}
		proto := "tcp"
		if p.GetProtocol() == skiffpb.Protocol_PROTOCOL_UDP {
			proto = "udp"
		}
		out = append(out, overlay.Port{Protocol: proto, Published: uint16(p.GetPublishedPort()), Target: uint16(p.GetTargetPort())})
	}
	return out
}

// onChange follows the endpoint table: it programs neighbours for remote
// endpoints in networks present here, and keeps the mesh's view current.
func (h *Host) onChange(c endpoints.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch c.Kind {
	case endpoints.Added:
		h.programLocked(c.Endpoint)
	case endpoints.Updated:
		if c.Previous.VTEP != c.Endpoint.VTEP {
			h.unprogramLocked(c.Previous)
		}
		h.programLocked(c.Endpoint)
	case endpoints.Removed:
		h.unprogramLocked(c.Endpoint)
	}
	h.updateMeshLocked(c)
}

func (h *Host) programLocked(e overlay.Endpoint) {
	if e.Node == h.cfg.Node || e.VTEP == h.cfg.VTEP {
		return
	}
	nw := h.networks[e.NetworkID]
	if nw == nil || !nw.built {
		return
	}
	if err := h.plane.SetNeighbor(nw.net.GetVni(), e.IP, e.VTEP); err != nil {
		h.logger.Warn("program neighbour", "ip", e.IP, "vtep", e.VTEP, "error", err)
	}
}

func (h *Host) unprogramLocked(e overlay.Endpoint) {
	if e.Node == h.cfg.Node || e.VTEP == h.cfg.VTEP {
		return
	}
	nw := h.networks[e.NetworkID]
	if nw == nil || !nw.built {
		return
	}
	if err := h.plane.DelNeighbor(nw.net.GetVni(), e.IP, e.VTEP); err != nil {
		h.logger.Warn("remove neighbour", "ip", e.IP, "vtep", e.VTEP, "error", err)
	}
}

// updateMeshLocked keeps the services' backends and published ports, and
// hands the mesh the complete port list when it changed.
func (h *Host) updateMeshLocked(c endpoints.Change) {
	e := c.Endpoint
	if e.Service == "" {
		return
	}
	if c.Kind == endpoints.Updated && c.Previous.IP != e.IP {
		delete(h.backends[c.Previous.Service], c.Previous.IP)
	}
	if c.Kind == endpoints.Removed {
		delete(h.backends[e.Service], e.IP)
		if len(h.backends[e.Service]) == 0 {
			delete(h.backends, e.Service)
		}
	} else if len(e.Published) > 0 {
		if h.backends[e.Service] == nil {
			h.backends[e.Service] = map[netip.Addr]bool{}
		}
		h.backends[e.Service][e.IP] = true
	}
	ports := map[string][]overlay.Port{}
	for svc := range h.backends {
		ports[svc] = h.ports[svc]
	}
	if c.Kind != endpoints.Removed && len(e.Published) > 0 {
		ports[e.Service] = e.Published
	}
	h.ports = ports
	h.syncMeshLocked()
}

// hostModeKey names a task's host-mode ports to the mesh, which serves
// them like a service with that one task as its only backend.
const hostModeKey = "task:"

// syncMeshLocked hands the mesh the complete list of ports this host
// answers: every service's ingress ports, and the host-mode ports of the
// tasks running here. It does nothing when the list is unchanged.
func (h *Host) syncMeshLocked() {
	var list []mesh.Port
	for svc, ps := range h.ports {
		for _, p := range ps {
			list = append(list, mesh.Port{Protocol: p.Protocol, Published: p.Published, Target: p.Target, Service: svc})
		}
	}
	for id, hp := range h.hostPorts {
		for _, p := range hp.ports {
			list = append(list, mesh.Port{Protocol: p.Protocol, Published: p.Published, Target: p.Target, Service: hostModeKey + id})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Published != list[j].Published {
			return list[i].Published < list[j].Published
		}
		return list[i].Protocol < list[j].Protocol
	})
	if slices.Equal(list, h.meshPorts) {
		return
	}
	h.meshPorts = list
	if err := h.mesh.Set(list); err != nil {
		h.logger.Warn("routing mesh", "error", err)
	}
}

// meshBackends is the mesh's view of a service: its running tasks'
// addresses in networks this host is part of.
func (h *Host) meshBackends(service string) []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if id, ok := strings.CutPrefix(service, hostModeKey); ok {
		if hp, ok := h.hostPorts[id]; ok {
			return []netip.Addr{hp.addr}
		}
		return nil
	}
	out := make([]netip.Addr, 0, len(h.backends[service]))
	for ip := range h.backends[service] {
		out = append(out, ip)
	}
	return out
}
