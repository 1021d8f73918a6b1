package dataplane

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Isolation between networks.
//
// The host has an address on every network's bridge, so a task that sends
// to another network's subnet through that address (it would need a route,
// which only a task with CAP_NET_ADMIN can add) would be routed by the
// host from one bridge to the other whenever the host forwards IPv4. Most
// container hosts do forward (dockerd turns net.ipv4.ip_forward on), so
// isolation must not depend on that switch.
//
// The Plane keeps one nftables table, "<prefix>-isolation" in the inet
// family, with a forward chain holding one rule per network:
//
//	iifname "sk-br-4096" oifname "sk-br-*" oifname != "sk-br-4096" counter reject with icmpx admin-prohibited
//
// that is, nothing is routed from one overlay bridge to another. Traffic
// within a network is bridged, not routed, and never matches (with
// br_netfilter loaded, bridged packets do reach the forward hook, but with
// the bridge as both input and output). Reject rather than drop, so a
// connection attempt fails at once with "no route to host" instead of
// hanging until it times out.
//
// The alternatives, and why not:
//   - net.ipv4.conf.<bridge>.forwarding=0 stops routing out of a bridge
//     too, but any later write that changes net.ipv4.ip_forward (dockerd
//     starting, an administrator) resets every interface's forwarding
//     switch, silently undoing the isolation.
//   - Bridge port isolation only separates the ports of one bridge; it
//     does nothing between bridges.
//
// Routing between a bridge and anything else (the underlay, say) is not
// touched: that is the business of whatever publishes ports.
//
// The table is derived from the devices: syncIsolation writes one rule per
// network that has devices, so the table never needs state of its own,
// and a network's rule goes when its devices go.

// isolationChain is the name of the table's only chain.
const isolationChain = "forward"

func (p *Plane) isolationTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: p.names.prefix + "-isolation"}
}

// isolationComment labels a network's rule; it is how syncIsolation
// recognises the rules it wrote.
func (p *Plane) isolationComment(vni uint32) string {
	return "skiff: isolate " + p.names.bridge(vni)
}

// syncIsolation makes the isolation table hold exactly one rule for each
// network that has devices, and removes the table when there is none. It
// writes nothing when the rules are already right; otherwise it replaces
// the whole table in one transaction, so there is no moment with a
// partial rule set.
func (p *Plane) syncIsolation() error {
	vnis, err := p.networks()
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	want := make([]string, len(vnis))
	for i, vni := range vnis {
		want[i] = p.isolationComment(vni)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(p.ns)))
	if err != nil {
		return fmt.Errorf("isolation: open nftables: %w", err)
	}
	have, exists, err := p.isolationRules(conn)
	if err != nil {
		return err
	}
	if exists == (len(vnis) > 0) && slices.Equal(have, want) {
		return nil
	}

	table := p.isolationTable()
	// Adding before deleting makes the delete succeed whether or not the
	// table exists: the usual way to replace a table atomically.
	conn.AddTable(table)
	conn.DelTable(table)
	if len(vnis) > 0 {
		conn.AddTable(table)
		chain := conn.AddChain(&nftables.Chain{
			Name:     isolationChain,
			Table:    table,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookForward,
			Priority: nftables.ChainPriorityFilter,
			Policy:   ptr(nftables.ChainPolicyAccept),
		})
		for _, vni := range vnis {
			conn.AddRule(&nftables.Rule{
				Table:    table,
				Chain:    chain,
				Exprs:    p.isolationExprs(vni),
				UserData: userdata.AppendString(nil, userdata.TypeComment, p.isolationComment(vni)),
			})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("isolation: write nftables table inet %s: %w", table.Name, err)
	}
	p.log.Info("isolation rules written", "table", table.Name, "vnis", vnis)
	return nil
}

// isolationExprs is the rule for one network (see the top of this file).
func (p *Plane) isolationExprs(vni uint32) []expr.Any {
	bridge := ifname(p.names.bridge(vni))
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: bridge},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		// A shorter operand compares a prefix: oifname "sk-br-*".
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p.names.prefix + "-" + bridgeKind)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: bridge},
		&expr.Counter{},
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED},
	}
}

// isolationRules returns the comments of the rules in the isolation
// chain, and whether the table exists.
func (p *Plane) isolationRules(conn *nftables.Conn) (comments []string, exists bool, err error) {
	comments, exists, err = ruleComments(conn, p.isolationTable(), isolationChain)
	if err != nil {
		return nil, exists, fmt.Errorf("isolation: %w", err)
	}
	return comments, exists, nil
}

// ifname is a device name as the kernel compares it: IFNAMSIZ bytes,
// NUL-padded, so that "sk-br-1" does not also match "sk-br-10".
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func ptr[T any](v T) *T { return &v }

// SyncRules brings the Plane's nftables tables, and the host firewall's
// accept rules, in line with its devices again. They are written whenever a
// network comes or goes; a firewall reload or an administrator's flush
// between those times would otherwise leave the overlay cut off, or its
// isolation gone, until the next one. It writes nothing when all is right.
func (p *Plane) SyncRules() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncRules()
}

// syncRules brings both of the Plane's nftables tables in line with its
// devices.
func (p *Plane) syncRules() error {
	if err := p.syncIsolation(); err != nil {
		return err
	}
	if err := p.syncEgress(); err != nil {
		return err
	}
	if p.fw == nil {
		return nil
	}
	vnis, err := p.networks()
	if err != nil {
		return fmt.Errorf("host firewall: %w", err)
	}
	if len(vnis) > 0 {
		err = p.fw.Open()
	} else {
		err = p.fw.Close()
	}
	if err != nil {
		return fmt.Errorf("host firewall: %w", err)
	}
	return nil
}
