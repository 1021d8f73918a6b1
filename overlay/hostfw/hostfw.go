// Package hostfw opens the host firewall's FORWARD chain for skiff's
// overlay bridges, and closes it again.
//
// A Debian host with docker.io runs with the FORWARD policy DROP, and with
// br_netfilter's bridge-nf-call-iptables on, so that even frames bridged
// between a task's veth and the network's VXLAN device pass through
// iptables' FORWARD chain. On such a host the overlay carries nothing, and
// tasks have no egress, until something accepts them: Docker does it for
// its own bridges, and skiff does it for its own, so that no user has a
// firewall step.
//
// The rules are few and narrow, matched on skiff's bridge names only:
//
//	-i sk-br-+ -o sk-br-+ -j ACCEPT                                          within a network (bridged)
//	-i sk-br-+ ! -o sk-br-+ -j ACCEPT                                        a task's egress
//	-o sk-br-+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT          its replies
//
// They go first in DOCKER-USER, the chain Docker keeps for its users'
// rules and evaluates before its own (and never flushes), or in FORWARD on
// a host where Docker manages no iptables. Isolation is not weakened: the
// overlay's own nftables tables reject routing between two overlay bridges
// and out of an internal network's bridge, and a rejection in any table is
// final whatever iptables accepts.
//
// The iptables binary does the work (github.com/coreos/go-iptables, as the
// CNI plugins do), so the rules land in whichever backend, legacy or nft,
// the host's iptables and Docker use.
package hostfw

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// dockerUserChain is the chain Docker keeps for its users' rules.
const dockerUserChain = "DOCKER-USER"

// comment marks skiff's rules, for whoever lists the chain.
const comment = "skiff overlay"

// Firewall keeps the accept rules of one bridge-name prefix. Its methods
// are not safe for concurrent use; the Plane serialises them.
type Firewall struct {
	ipt    *iptables.IPTables
	bridge string // the bridges' name pattern, such as "sk-br-+"
	log    *slog.Logger
	// closed is set by a Close that succeeded, until the next Open: a host
	// without networks need not look at its chains again and again.
	closed bool
}

// New returns the Firewall of bridges whose names start with prefix
// ("sk-br-"). It fails when there is no iptables binary: a host without
// one has no FORWARD chain to open either, which the caller may take as
// nothing to do (ErrNoIptables).
func New(prefix string, logger *slog.Logger) (*Firewall, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoIptables, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Firewall{ipt: ipt, bridge: prefix + "+", log: logger.With("component", "hostfw")}, nil
}

// ErrNoIptables is New's error on a host without iptables.
var ErrNoIptables = errors.New("no iptables on this host")

// rules are the accept rules, in the order they are inserted.
func (f *Firewall) rules() [][]string {
	c := []string{"-m", "comment", "--comment", comment}
	return [][]string{
		append([]string{"-i", f.bridge, "-o", f.bridge}, append(c, "-j", "ACCEPT")...),
		append([]string{"-i", f.bridge, "!", "-o", f.bridge}, append(c, "-j", "ACCEPT")...),
		append([]string{"-o", f.bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"}, append(c, "-j", "ACCEPT")...),
	}
}

// chain is where the rules go: DOCKER-USER when Docker made it, FORWARD
// otherwise.
func (f *Firewall) chain() (string, error) {
	ok, err := f.ipt.ChainExists("filter", dockerUserChain)
	if err != nil {
		return "", fmt.Errorf("look for iptables chain %s: %w", dockerUserChain, err)
	}
	if ok {
		return dockerUserChain, nil
	}
	return "FORWARD", nil
}

// Open makes sure the rules are at the head of the chain. It is cheap when
// they are: one listing.
func (f *Firewall) Open() error {
	f.closed = false
	chain, err := f.chain()
	if err != nil {
		return err
	}
	have, err := f.ipt.List("filter", chain)
	if err != nil {
		return fmt.Errorf("list iptables chain %s: %w", chain, err)
	}
	rules := f.rules()
	if f.atHead(have, chain) {
		return nil
	}
	// Out of place or missing: take out what is there, and put all of
	// them first, in order, so that no DROP a user added to the chain
	// comes before them.
	f.remove(chain)
	for i, r := range rules {
		if err := f.ipt.Insert("filter", chain, i+1, r...); err != nil {
			return fmt.Errorf("accept skiff's bridges in iptables chain %s: %w", chain, err)
		}
	}
	f.log.Info("accepting forwarded traffic of skiff's bridges", "chain", chain, "bridges", f.bridge)
	return nil
}

// atHead reports whether the chain's listing starts with the rules.
func (f *Firewall) atHead(listing []string, chain string) bool {
	var body []string
	for _, l := range listing {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			body = append(body, l)
		}
	}
	rules := f.rules()
	if len(body) < len(rules) {
		return false
	}
	for i, r := range rules {
		if !sameRule(body[i], r) {
			return false
		}
	}
	return true
}

// sameRule compares a rule as iptables -S prints it with one as given:
// iptables adds the comment's quotes and may reorder nothing else.
func sameRule(listed string, spec []string) bool {
	fields := strings.Fields(strings.ReplaceAll(listed, `"`, ""))
	want := strings.Fields(strings.Join(spec, " "))
	return len(fields) >= 2 && slices.Equal(fields[2:], want)
}

// Close removes the rules from the chain they are kept in.
func (f *Firewall) Close() error {
	if f.closed {
		return nil
	}
	chain, err := f.chain()
	if err != nil {
		return err
	}
	f.closed = true
	if f.remove(chain) > 0 {
		f.log.Info("no longer accepting forwarded traffic of skiff's bridges", "chain", chain)
	}
	return nil
}

// remove deletes every copy of the rules from chain, and says how many it
// deleted; missing ones are fine.
func (f *Firewall) remove(chain string) int {
	n := 0
	for _, r := range f.rules() {
		for {
			ok, err := f.ipt.Exists("filter", chain, r...)
			if err != nil || !ok {
				break
			}
			if err := f.ipt.Delete("filter", chain, r...); err != nil {
				f.log.Warn("remove a skiff rule from iptables", "chain", chain, "error", err)
				break
			}
			n++
		}
	}
	return n
}
