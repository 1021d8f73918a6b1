package dataplane

import (
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netns"
)

func nftConn(tb testing.TB, hst *host) *nftables.Conn {
	tb.Helper()
	ns, err := netns.GetFromPath(hst.ns)
	must(tb, err)
	tb.Cleanup(func() { ns.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	must(tb, err)
	return c
}

func tableExists(tb testing.TB, hst *host) bool {
	tb.Helper()
	tables, err := nftConn(tb, hst).ListTablesOfFamily(nftables.TableFamilyINet)
	must(tb, err)
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == "sk-isolation" })
}

// isolationComments lists the comments of the isolation rules, or nil if
// there is no table.
func isolationComments(tb testing.TB, hst *host) []string {
	tb.Helper()
	if !tableExists(tb, hst) {
		return nil
	}
	c := nftConn(tb, hst)
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "sk-isolation"}
	rules, err := c.GetRules(table, &nftables.Chain{Name: "forward", Table: table})
	must(tb, err)
	var out []string
	for _, r := range rules {
		s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		out = append(out, s)
	}
	return out
}
