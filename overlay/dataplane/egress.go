package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Egress: tasks reach the world outside the cluster through their own host.
//
// A task's default route points at its host's own address on the bridge of
// the task's first network that is not internal (Attachment.Gateway). The
// host routes what arrives there like any router, and the Plane's egress
// table masquerades it behind the host's address on the way out:
//
//	table ip sk-egress {
//	  chain postrouting {   # nat, srcnat
//	    ip saddr 198.19.0.0/24 oifname != "sk-br-*" counter masquerade
//	  }
//	  chain forward {       # filter
//	    iifname "sk-br-4097" oifname != "sk-br-4097" counter reject   # internal: true
//	  }
//	}
//
// Swarm gives each task a second interface on docker_gwbridge for this.
// The host already has an address on every bridge its tasks use, so the
// bridge can be the gateway: no second veth to make per task (a task's
// start is on the agent's critical path), and no second address range to
// allocate and keep clear of the host's own networks.
//
// Overlay traffic stays on the overlay: a task's networks are directly
// connected routes, more specific than the default, and routing from one
// overlay bridge to another is rejected by the isolation table. Only what
// leaves through a non-overlay link is masqueraded, so the other hosts'
// tasks still see a task's own address.
//
// A network declared internal gets no default route through it, no
// masquerade, and a forward rule that rejects anything routed out of its
// bridge, so that a task that adds a route of its own (it would need
// CAP_NET_ADMIN) still cannot leave. Its tasks still reach their host's
// address there, where the embedded DNS answers.
//
// Like the isolation table, the egress table is derived from the devices:
// a bridge's address gives its subnet, and its alias says whether the
// network is internal, so a restarted agent finds the rules to keep
// without any state of its own, and the table goes when the last network
// does. Routing needs net.ipv4.ip_forward; the Plane turns it on when the
// first network with egress appears, as dockerd does, and never off, since
// it cannot know who else relies on it.

// internalAlias marks the bridge of an internal network.
const internalAlias = "skiff:internal"

// The egress table's chains.
const (
	egressNATChain     = "postrouting"
	egressFilterChain  = "forward"
	ipv4ForwardingPath = "/proc/sys/net/ipv4/ip_forward"
)

func (p *Plane) egressTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: p.names.prefix + "-egress"}
}

// egressNetwork is what the egress rules need to know of one network, read
// from its bridge.
type egressNetwork struct {
	vni      uint32
	subnet   netip.Prefix
	internal bool
}

func (n egressNetwork) comment(p *Plane) string {
	if n.internal {
		return "skiff: internal " + p.names.bridge(n.vni)
	}
	return "skiff: egress " + p.names.bridge(n.vni) + " " + n.subnet.String()
}

// egressNetworks reads every network's bridge: its subnet from the host's
// address on it, internal from its alias. A bridge without an address yet
// (EnsureNetwork half done) has no rule until it has one.
func (p *Plane) egressNetworks() ([]egressNetwork, error) {
	links, err := p.linkList()
	if err != nil {
		return nil, err
	}
	var out []egressNetwork
	for _, link := range links {
		br, ok := link.(*netlink.Bridge)
		if !ok {
			continue
		}
		vni, ok := p.names.parseVNI(br.Attrs().Name, bridgeKind)
		if !ok {
			continue
		}
		addrs, err := dump(func() ([]netlink.Addr, error) { return p.h.AddrList(br, netlink.FAMILY_V4) })
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", br.Attrs().Name, err)
		}
		if len(addrs) == 0 {
			continue
		}
		out = append(out, egressNetwork{
			vni:      vni,
			subnet:   prefixOf(addrs[0].IPNet).Masked(),
			internal: br.Attrs().Alias == internalAlias,
		})
	}
	slices.SortFunc(out, func(a, b egressNetwork) int { return int(a.vni) - int(b.vni) })
	return out, nil
}

// syncEgress makes the egress table match the networks (see the top of
// this file). Like syncIsolation, it writes nothing when the rules are
// right, and otherwise replaces the whole table in one transaction.
func (p *Plane) syncEgress() error {
	nets, err := p.egressNetworks()
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	var want []string
	routed := false
	for _, n := range nets {
		want = append(want, n.comment(p))
		routed = routed || !n.internal
	}
	if routed {
		if err := p.enableForwarding(); err != nil {
			return fmt.Errorf("egress: %w", err)
		}
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(p.ns)))
	if err != nil {
		return fmt.Errorf("egress: open nftables: %w", err)
	}
	table := p.egressTable()
	have, exists, err := ruleComments(conn, table, egressNATChain, egressFilterChain)
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	if exists == (len(nets) > 0) && slices.Equal(have, want) {
		return nil
	}
	conn.AddTable(table)
	conn.DelTable(table)
	if len(nets) > 0 {
		conn.AddTable(table)
		nat := conn.AddChain(&nftables.Chain{
			Name: egressNATChain, Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		filter := conn.AddChain(&nftables.Chain{
			Name: egressFilterChain, Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
			Policy: ptr(nftables.ChainPolicyAccept),
		})
		for _, n := range nets {
			rule := &nftables.Rule{Table: table, Chain: nat, Exprs: p.masqueradeExprs(n.subnet)}
			if n.internal {
				rule = &nftables.Rule{Table: table, Chain: filter, Exprs: p.internalExprs(n.vni)}
			}
			rule.UserData = userdata.AppendString(nil, userdata.TypeComment, n.comment(p))
			conn.AddRule(rule)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("egress: write nftables table ip %s: %w", table.Name, err)
	}
	p.log.Info("egress rules written", "table", table.Name, "rules", want)
	return nil
}

// masqueradeExprs: ip saddr SUBNET oifname != "sk-br-*" counter masquerade.
func (p *Plane) masqueradeExprs(subnet netip.Prefix) []expr.Any {
	addr := subnet.Addr().As4()
	bits := net4Mask(subnet.Bits())
	return []expr.Any{
		// The source address: 4 bytes at offset 12 of the IPv4 header.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: bits, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		// A shorter operand compares a prefix: oifname != "sk-br-*".
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(p.names.prefix + "-" + bridgeKind)},
		&expr.Counter{},
		&expr.Masq{},
	}
}

// internalExprs: iifname BRIDGE oifname != BRIDGE counter reject.
func (p *Plane) internalExprs(vni uint32) []expr.Any {
	bridge := ifname(p.names.bridge(vni))
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: bridge},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: bridge},
		&expr.Counter{},
		// ICMP host unreachable, "communication administratively
		// prohibited": a connection fails at once instead of hanging.
		&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 13},
	}
}

// net4Mask is the IPv4 netmask of a prefix length.
func net4Mask(bits int) []byte {
	m := uint32(0xffffffff) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return []byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
}

// ruleComments returns the comments of the rules in the table's chains,
// in chain order, and whether the table exists.
func ruleComments(conn *nftables.Conn, table *nftables.Table, chains ...string) (comments []string, exists bool, err error) {
	tables, err := conn.ListTablesOfFamily(table.Family)
	if err != nil {
		return nil, false, fmt.Errorf("list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == table.Name }) {
		return nil, false, nil
	}
	have, err := conn.ListChainsOfTableFamily(table.Family)
	if err != nil {
		return nil, true, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, name := range chains {
		i := slices.IndexFunc(have, func(c *nftables.Chain) bool { return c.Table.Name == table.Name && c.Name == name })
		if i < 0 {
			continue
		}
		rules, err := conn.GetRules(table, have[i])
		if err != nil {
			return nil, true, fmt.Errorf("list rules of %s %s: %w", table.Name, name, err)
		}
		for _, r := range rules {
			c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			comments = append(comments, c)
		}
	}
	return comments, true, nil
}

// enableForwarding turns net.ipv4.ip_forward on in the Plane's namespace.
// The sysctl is per namespace, and the file under /proc/sys/net belongs to
// the namespace of the thread that opens it, so the write happens on a
// thread moved into the Plane's namespace for the purpose.
func (p *Plane) enableForwarding() error {
	errc := make(chan error, 1)
	// A goroutine of its own: the thread it locks is thrown away if it
	// cannot be moved back, and no other goroutine may run on it meanwhile.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(p.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the plane's network namespace: %w", err)
			return
		}
		errc <- p.writeForwarding()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with the
			// goroutine rather than reuse it in the wrong namespace.
			return
		}
		runtime.UnlockOSThread()
	}()
	return <-errc
}

func (p *Plane) writeForwarding() error {
	b, err := os.ReadFile(ipv4ForwardingPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", ipv4ForwardingPath, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipv4ForwardingPath, []byte("1\n"), 0o644); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("turn on IPv4 forwarding for tasks' egress: %w (run the agent as root, or set net.ipv4.ip_forward=1)", err)
		}
		return fmt.Errorf("turn on IPv4 forwarding for tasks' egress: %w", err)
	}
	p.log.Info("turned on IPv4 forwarding, for tasks' egress", "sysctl", "net.ipv4.ip_forward")
	return nil
}
