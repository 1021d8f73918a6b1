// Package gossip is skiff's membership layer: every manager and agent is a
// member of one hashicorp/memberlist pool. Members advertise who they are in
// their node metadata, so an agent started with only --join can find the
// managers, and the leader learns from memberlist's failure detector that a
// host has died before its heartbeats run out.
//
// The pool runs on a transport of its own (transport.go): one port, UDP
// and TCP, whose TCP side also takes the TLS connections of nodes that are
// joining and do not hold the gossip key yet (JoinListener). With keys
// (Config.Keys, keys.go) everything memberlist sends is encrypted and
// authenticated. The overlay's endpoint records the pool carries are
// checked before its delegate sees them (records.go).
package gossip

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Role is what a member runs.
type Role string

// The roles of gossip members.
const (
	RoleManager Role = "manager"
	RoleAgent   Role = "agent"
)

// Meta is what a member advertises to the pool.
type Meta struct {
	// Name is the node name (--name). A manager and an agent on one host
	// share it; they are told apart by Role.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Addr is the member's advertise address on the underlay.
	Addr string `json:"addr"`
	// APIAddr is where a manager serves gRPC (host:port); empty for agents.
	APIAddr string `json:"api,omitempty"`
	// Leaving is set just before a member leaves gracefully, so that the
	// others can tell a restart from a death (memberlist reports both the
	// same way).
	Leaving bool `json:"leaving,omitempty"`
	// Lead is the Raft term in which this manager leads, 0 while it does
	// not. Agents learn of a new leader from it within a gossip round or
	// two of its election, instead of waiting for the old leader's silence
	// to time out; a deposed leader that was cut off may still advertise
	// its old term, which the higher one outranks.
	Lead uint64 `json:"lead,omitempty"`
}

// Member is a live member of the pool.
type Member struct {
	Meta
	// Alive is false once memberlist's failure detector has declared the
	// member dead or it left.
	Alive bool
}

// EventKind says what happened to a member.
type EventKind int

// The kinds of membership events.
const (
	MemberJoined EventKind = iota
	// MemberLeft: the member left gracefully (its process is stopping).
	MemberLeft
	MemberUpdated
	// MemberFailed: the failure detector declared the member dead.
	MemberFailed
)

// Event is one membership change.
type Event struct {
	Kind   EventKind
	Member Member
}

// Config configures a member.
type Config struct {
	Meta Meta
	// BindAddr and Port are where memberlist listens (TCP and UDP).
	BindAddr string
	Port     int
	// Join lists host:port of members to join; the member keeps trying in
	// the background until one answers.
	Join []string
	// Keys are the gossip keys, KeySize bytes each; the first is the
	// primary, which encrypts, and all of them decrypt. With keys set,
	// every packet and stream is encrypted and authenticated (AES-GCM),
	// and anything else is refused: only holders of a key are members.
	// Keys also turn on the origin rule for endpoint records (records.go).
	// Keys change at run time with the Pool's key methods (see keys.go).
	//
	// Empty keeps the pool unencrypted, as it was before keys existed, only
	// until the manager and agent wiring hands every node its key at join;
	// a later change makes keys mandatory.
	Keys [][]byte
	// Delegate, when set, carries user data (the overlay's endpoint records)
	// in the pool's broadcasts and push/pull exchanges. It is handed only
	// the records the pool's checks let through (records.go).
	Delegate memberlist.Delegate
	// OnEvent, when set, is called for every membership change, from
	// memberlist's goroutine; it must not block.
	OnEvent func(Event)
	Logger  *slog.Logger
}

// Pool is this process's membership in the gossip pool.
type Pool struct {
	ml        *memberlist.Memberlist
	transport *transport
	cfg       Config
	logger    *slog.Logger
	// keyring is memberlist's, nil for an unencrypted pool; keysMu
	// serializes the key methods (see RemoveKey).
	keyring *memberlist.Keyring
	keysMu  sync.Mutex
	// meta is the encoded Meta memberlist advertises: local, encoded.
	meta atomic.Value
	// local is the member's own Meta; it changes when a manager takes or
	// loses the lead and when the member leaves.
	localMu sync.Mutex
	local   Meta

	// members is the pool's own copy of the live members, by memberlist
	// name, kept by the event delegate. memberlist's Members returns
	// pointers into its state, which its goroutines rewrite under a lock
	// callers cannot take; its events are delivered under that lock, so a
	// copy made there is safe to read anywhere.
	membersMu sync.Mutex
	members   map[string]member

	// stop ends the join loops, which close loops when they return;
	// shutdown makes Shutdown run once.
	stop     context.CancelFunc
	loops    chan struct{}
	shutdown sync.Once
	shutErr  error
}

// member is a live member and where memberlist reaches it.
type member struct {
	Member
	addr net.IP
	port uint16
}

// memberName is the memberlist name of a member: its node name and role, since a
// manager and an agent of one node are two members.
func (m Meta) memberName() string { return m.Name + "/" + string(m.Role) }

// Start joins the pool. It returns once the local member is up; joining the
// seeds in cfg.Join goes on in the background until it succeeds or ctx ends.
func Start(ctx context.Context, cfg Config) (*Pool, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("encode gossip metadata: %w", err)
	}
	// The size that counts is the largest the member ever advertises, with
	// the leaving mark and a lead term: memberlist panics on metadata over
	// its limit.
	leaving := cfg.Meta
	leaving.Leaving = true
	leaving.Lead = math.MaxUint64
	if b, _ := json.Marshal(leaving); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata is %d bytes, over memberlist's %d: shorten the node name or addresses", len(b), memberlist.MetaMaxSize)
	}
	keyring, err := newKeyring(cfg.Keys)
	if err != nil {
		return nil, err
	}
	cfg.Keys = nil // the keyring holds them from now on, and they change
	ctx, stop := context.WithCancel(ctx)
	p := &Pool{cfg: cfg, logger: logger, keyring: keyring, members: map[string]member{}, stop: stop, loops: make(chan struct{}), local: cfg.Meta}
	p.meta.Store(meta)

	tr, err := newTransport(cfg.BindAddr, cfg.Port, defaultLimits(), logger.With("component", "gossip-transport"))
	if err != nil {
		stop()
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	p.transport = tr

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Meta.memberName()
	mc.Transport = tr
	// With a transport of its own memberlist binds nothing itself; the
	// bound port is still its default port for seeds given without one,
	// and what it advertises.
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = tr.port
	mc.AdvertiseAddr = cfg.Meta.Addr
	mc.AdvertisePort = tr.port
	// Probe more often than the LAN default so a dead host is suspected
	// within about a second; the dispatcher's heartbeat grace is the other
	// signal and both together let the leader replace tasks in seconds.
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond
	mc.SuspicionMult = 2
	mc.GossipInterval = 100 * time.Millisecond
	// Anti-entropy every 5 s rather than 30: the full state of a small
	// cluster is a few kilobytes, and it bounds how long a lost update can
	// leave a host's view of the overlay wrong.
	mc.PushPullInterval = 5 * time.Second
	if keyring != nil {
		mc.Keyring = keyring
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.Delegate = &metaDelegate{meta: &p.meta, user: cfg.Delegate, guard: &recordGuard{
		self:      cfg.Meta.Name,
		origins:   keyring != nil,
		agentAddr: p.agentAddr,
		now:       time.Now,
		logger:    logger.With("component", "gossip-records"),
	}}
	mc.Events = &eventDelegate{p: p}
	mc.Logger = slog.NewLogLogger(logger.With("component", "memberlist").Handler(), slog.LevelDebug)

	ml, err := memberlist.Create(mc)
	if err != nil {
		stop()
		_ = tr.Shutdown()
		return nil, fmt.Errorf("start gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(tr.port)), err)
	}
	p.ml = ml
	go func() {
		defer close(p.loops)
		if len(cfg.Join) > 0 {
			p.joinLoop(ctx)
		}
	}()
	return p, nil
}

// joinLoop keeps trying the seeds with backoff, because a member may start
// before any seed is up (all managers of a fresh cluster start together).
func (p *Pool) joinLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		n, err := p.ml.Join(p.cfg.Join)
		if err == nil && n > 0 {
			p.logger.Info("joined gossip pool", "seeds", p.cfg.Join, "members", p.ml.NumMembers())
			p.rejoinLoop(ctx)
			return
		}
		p.logger.Debug("gossip join failed; retrying", "seeds", p.cfg.Join, "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// rejoinInterval is how often a member checks that its seeds are still
// in its view of the pool.
const rejoinInterval = 10 * time.Second

// rejoinLoop joins the seeds again whenever one of them is missing from the
// live members. Memberlist stops gossiping with members it declared dead
// after a while, so two sides of a long partition would otherwise never
// find each other again once it heals.
func (p *Pool) rejoinLoop(ctx context.Context) {
	t := time.NewTicker(rejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		alive := map[string]bool{}
		for _, m := range p.snapshot() {
			alive[net.JoinHostPort(m.addr.String(), strconv.Itoa(int(m.port)))] = true
		}
		var missing []string
		for _, seed := range p.cfg.Join {
			if !alive[seed] {
				missing = append(missing, seed)
			}
		}
		if len(missing) == 0 {
			continue
		}
		if n, err := p.ml.Join(missing); err == nil && n > 0 {
			p.logger.Info("rejoined gossip members", "seeds", missing, "reached", n)
		}
	}
}

// Members returns the live members, sorted by name and role.
func (p *Pool) Members() []Member {
	p.membersMu.Lock()
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, m.Member)
	}
	p.membersMu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Role, b.Role))
	})
	return out
}

// remember and forget keep the pool's copy of the members; the event
// delegate calls them under memberlist's lock (see Pool.members).
func (p *Pool) remember(n *memberlist.Node, m Member) {
	p.membersMu.Lock()
	defer p.membersMu.Unlock()
	p.members[n.Name] = member{Member: m, addr: slices.Clone(n.Addr), port: n.Port}
}

func (p *Pool) forget(n *memberlist.Node) {
	p.membersMu.Lock()
	defer p.membersMu.Unlock()
	delete(p.members, n.Name)
}

// agentAddr returns the address memberlist reaches the live agent of node
// at.
func (p *Pool) agentAddr(node string) (netip.Addr, bool) {
	p.membersMu.Lock()
	m, ok := p.members[Meta{Name: node, Role: RoleAgent}.memberName()]
	p.membersMu.Unlock()
	if !ok {
		return netip.Addr{}, false
	}
	addr, ok := netip.AddrFromSlice(m.addr)
	return addr.Unmap(), ok
}

// snapshot copies the members with their memberlist names.
func (p *Pool) snapshot() map[string]member {
	p.membersMu.Lock()
	defer p.membersMu.Unlock()
	return maps.Clone(p.members)
}

// ManagerAPIAddrs returns the API addresses of the live managers.
func (p *Pool) ManagerAPIAddrs() []string {
	var out []string
	for _, m := range p.Members() {
		if m.Role == RoleManager && m.Alive && !m.Leaving && m.APIAddr != "" {
			out = append(out, m.APIAddr)
		}
	}
	return out
}

// SetLead advertises that this manager leads in Raft term term, or, with
// 0, that it does not. It returns once the change is on its way to another
// member, or after timeout.
func (p *Pool) SetLead(term uint64, timeout time.Duration) error {
	return p.updateMeta(func(m *Meta) { m.Lead = term }, timeout)
}

// updateMeta changes the member's own metadata and gossips it.
func (p *Pool) updateMeta(change func(*Meta), timeout time.Duration) error {
	p.localMu.Lock()
	change(&p.local)
	b, err := json.Marshal(p.local)
	if err == nil {
		p.meta.Store(b)
	}
	p.localMu.Unlock()
	if err != nil {
		return fmt.Errorf("encode gossip metadata: %w", err)
	}
	return p.ml.UpdateNode(timeout)
}

// Leader returns the API address of the manager that advertises the
// highest lead term among the live members, and that term; 0 when none
// does.
func (p *Pool) Leader() (apiAddr string, term uint64) {
	for _, m := range p.Members() {
		if m.Role == RoleManager && m.Alive && !m.Leaving && m.APIAddr != "" && m.Lead > term {
			apiAddr, term = m.APIAddr, m.Lead
		}
	}
	return apiAddr, term
}

// Opinion is what gossip can say about a member right now.
type Opinion int

// The opinions Probe gives.
const (
	// Unknown: the member is not in the pool as a live member (it never
	// joined, left gracefully, or runs without gossip), so gossip has no
	// say.
	Unknown Opinion = iota
	// Heard: the member answered a direct probe.
	Heard
	// Silent: the member is in the pool but did not answer a direct probe
	// within memberlist's probe timeout.
	Silent
)

func (o Opinion) String() string {
	switch o {
	case Heard:
		return "heard"
	case Silent:
		return "silent"
	}
	return "unknown"
}

// Probe asks the member with node name name and role role for a direct
// answer, as memberlist's failure detector would, and waits at most the
// probe timeout (250 ms). It is the second opinion the leader takes before
// it judges a node that has no session with it.
func (p *Pool) Probe(name string, role Role) Opinion {
	key := Meta{Name: name, Role: role}.memberName()
	p.membersMu.Lock()
	m, ok := p.members[key]
	p.membersMu.Unlock()
	if !ok || m.Leaving {
		return Unknown
	}
	if _, err := p.ml.Ping(key, &net.UDPAddr{IP: m.addr, Port: int(m.port)}); err != nil {
		return Silent
	}
	return Heard
}

// SendToAgents sends msg to every live agent but this member, best effort
// (UDP): the receivers' Delegate.NotifyMsg gets it, as with a broadcast.
func (p *Pool) SendToAgents(msg []byte) {
	self := p.ml.LocalNode().Name
	for name, m := range p.snapshot() {
		if name == self || m.Role != RoleAgent {
			continue
		}
		to := &memberlist.Node{Name: name, Addr: m.addr, Port: m.port}
		if err := p.ml.SendBestEffort(to, msg); err != nil {
			p.logger.Debug("direct gossip send failed", "to", name, "error", err)
		}
	}
}

// JoinListener returns the listener of the TLS connections made to the
// gossip port. A node that is joining knows only a member's gossip address
// and its join token, not yet the gossip key; it reaches the member over
// TLS on that address to be handed what it needs. The pool tells those
// connections from memberlist's by their first byte (a TLS handshake
// record) and hands them over raw, that byte included: the caller serves
// the listener, typically with tls.NewListener under a gRPC server, from
// its own goroutine. The listener is closed when the pool shuts down;
// closing it earlier stops only the joins. Connections that no one accepts
// within a few seconds are closed.
func (p *Pool) JoinListener() net.Listener { return p.transport.join }

// Memberlist exposes the underlying pool for the overlay's broadcasts.
func (p *Pool) Memberlist() *memberlist.Memberlist { return p.ml }

// Shutdown leaves the pool gracefully (so others need not wait for the
// failure detector) and stops gossiping. It first marks the member as
// leaving, so the others know it was not a failure. Calls after the first
// return the first one's result.
func (p *Pool) Shutdown(timeout time.Duration) error {
	p.shutdown.Do(func() {
		// The join loops first, so that none dials out from a pool that
		// is going away.
		p.stop()
		<-p.loops
		markErr := p.updateMeta(func(m *Meta) { m.Leaving = true }, timeout/2)
		leaveErr := p.ml.Leave(timeout)
		p.shutErr = errors.Join(markErr, leaveErr, p.ml.Shutdown())
	})
	return p.shutErr
}

// Kill stops gossiping without a word to the others, as a process that
// died would: they find out through the failure detector. It is for fault
// tests in process; Shutdown is the way to stop.
func (p *Pool) Kill() {
	p.shutdown.Do(func() {
		p.stop()
		<-p.loops
		p.shutErr = p.ml.Shutdown()
	})
}

func decode(n *memberlist.Node) (Member, bool) {
	var m Member
	if err := json.Unmarshal(n.Meta, &m.Meta); err != nil || m.Name == "" {
		return m, false
	}
	return m, true
}

// metaDelegate advertises the member's metadata and passes user data on to
// the configured delegate, less the records the guard refuses.
type metaDelegate struct {
	meta  *atomic.Value // []byte
	user  memberlist.Delegate
	guard *recordGuard
}

func (d *metaDelegate) NodeMeta(limit int) []byte { return d.meta.Load().([]byte) }

func (d *metaDelegate) NotifyMsg(b []byte) {
	if d.user == nil {
		return
	}
	if b, ok := d.guard.filter(b, "message"); ok {
		d.user.NotifyMsg(b)
	}
}

func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	if d.user != nil {
		return d.user.GetBroadcasts(overhead, limit)
	}
	return nil
}

func (d *metaDelegate) LocalState(join bool) []byte {
	if d.user != nil {
		return d.user.LocalState(join)
	}
	return nil
}

func (d *metaDelegate) MergeRemoteState(buf []byte, join bool) {
	if d.user == nil {
		return
	}
	if buf, ok := d.guard.filter(buf, "push/pull"); ok {
		d.user.MergeRemoteState(buf, join)
	}
}

// eventDelegate turns memberlist's callbacks into Events.
type eventDelegate struct{ p *Pool }

func (e *eventDelegate) notify(kind EventKind, n *memberlist.Node, alive bool) {
	m, ok := decode(n)
	if !ok {
		return
	}
	m.Alive = alive
	if alive {
		e.p.remember(n, m)
	} else {
		e.p.forget(n)
	}
	if e.p.cfg.OnEvent != nil {
		e.p.cfg.OnEvent(Event{Kind: kind, Member: m})
	}
}

func (e *eventDelegate) NotifyJoin(n *memberlist.Node) { e.notify(MemberJoined, n, true) }

// NotifyLeave tells a graceful leave from a death by the Leaving mark the
// member gossiped before it left: a restarting agent leaves, and must not
// have its node judged down for it.
func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	kind := MemberFailed
	if m, ok := decode(n); ok && m.Leaving {
		kind = MemberLeft
	}
	e.notify(kind, n, false)
}
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.notify(MemberUpdated, n, true) }
