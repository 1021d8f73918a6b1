package scheduler

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Operator is a constraint's comparison.
type Operator int

const (
	// OpEqual is "==": the node's value equals the constraint's.
	OpEqual Operator = iota
	// OpNotEqual is "!=": it does not.
	OpNotEqual
)

// String returns the operator as written in a constraint.
func (o Operator) String() string {
	if o == OpNotEqual {
		return "!="
	}
	return "=="
}

// knownKeys lists the keys a constraint may use, for error messages.
const knownKeys = "node.id, node.hostname, node.role, node.ip, node.platform.os, " +
	"node.platform.arch, node.labels.<name> or engine.labels.<name>"

// Constraint is one parsed placement constraint, such as
// "node.labels.zone == eu-1". Make constraints with ParseConstraints; a zero
// Constraint matches no node.
//
// Keys are those docker knows: node.id, node.hostname (the hostname the
// agent reported, or the node's name before it reports one), node.role
// (manager or worker), node.ip (an address or a CIDR prefix, matched
// against the node's advertise address), node.platform.os,
// node.platform.arch, node.labels.<name> (the labels an operator set with
// `node update --label-add`) and engine.labels.<name> (the agent's --label
// flags). As in docker, keys and values compare case-insensitively, label
// names case-sensitively, and a label a node lacks reads as empty: "!="
// holds on such a node and "==" does not.
type Constraint struct {
	key   string
	op    Operator
	value string
	attr  nodeAttr
	// prefix is the value of a node.ip constraint; a single address is the
	// prefix of its full length.
	prefix netip.Prefix
}

// ConstraintError reports a placement constraint that cannot be parsed.
type ConstraintError struct {
	// Expr is the constraint as written.
	Expr string
	// Err says what is wrong with it.
	Err error
}

// Error implements error.
func (e *ConstraintError) Error() string {
	return fmt.Sprintf("invalid placement constraint %q: %v", e.Expr, e.Err)
}

// Unwrap returns what is wrong with the constraint.
func (e *ConstraintError) Unwrap() error { return e.Err }

// ParseConstraints parses placement constraints as docker does: each is
// "KEY==VALUE" or "KEY!=VALUE", with white space allowed around the key and
// the value. Unlike docker, which lets a constraint with an unknown key
// silently match no node, it rejects unknown keys, node.role values other
// than manager and worker, and node.ip values that are neither an address
// nor a prefix, so that the mistake surfaces when the stack is deployed.
// Every bad constraint is reported, each as a *ConstraintError, joined.
func ParseConstraints(exprs []string) ([]Constraint, error) {
	if len(exprs) == 0 {
		return nil, nil
	}
	out := make([]Constraint, 0, len(exprs))
	var errs []error
	for _, e := range exprs {
		c, err := parseConstraint(e)
		if err != nil {
			errs = append(errs, &ConstraintError{Expr: e, Err: err})
			continue
		}
		out = append(out, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// parseConstraint parses one expression.
func parseConstraint(expr string) (Constraint, error) {
	// The first operator splits the expression; any later "=" is caught by
	// the value check, so "a==b==c" is an error rather than a guess.
	i, op := strings.Index(expr, "=="), OpEqual
	if j := strings.Index(expr, "!="); j >= 0 && (i < 0 || j < i) {
		i, op = j, OpNotEqual
	}
	if i < 0 {
		return Constraint{}, errors.New("want KEY==VALUE or KEY!=VALUE")
	}
	c := Constraint{
		key:   strings.TrimSpace(expr[:i]),
		op:    op,
		value: strings.TrimSpace(expr[i+2:]),
	}
	if c.key == "" {
		return Constraint{}, errors.New("missing key")
	}
	if !validKey(c.key) {
		return Constraint{}, fmt.Errorf("invalid key %q: want a letter or '_' followed by letters, digits, '-', '_' or '.'", c.key)
	}
	attr, err := parseAttr(c.key)
	switch {
	case errors.Is(err, errUnknownKey):
		return Constraint{}, fmt.Errorf("unknown key %q (want %s)", c.key, knownKeys)
	case err != nil:
		return Constraint{}, fmt.Errorf("key %q: %w", c.key, err)
	}
	c.attr = attr
	if c.value == "" {
		return Constraint{}, errors.New("missing value")
	}
	if !validValue(c.value) {
		return Constraint{}, fmt.Errorf("invalid value %q: want letters, digits, white space or any of :-_.*()?+[]\\^$|/", c.value)
	}
	switch attr.kind {
	case attrRole:
		if !strings.EqualFold(c.value, "manager") && !strings.EqualFold(c.value, "worker") {
			return Constraint{}, fmt.Errorf("node.role is %q, want manager or worker", c.value)
		}
	case attrIP:
		if c.prefix, err = parseIPValue(c.value); err != nil {
			return Constraint{}, err
		}
	}
	return c, nil
}

// parseIPValue parses a node.ip value: an address or a CIDR prefix.
func parseIPValue(v string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(v); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("node.ip is %q, want an IP address or a CIDR prefix", v)
	}
	return p.Masked(), nil
}

// validKey is docker's key pattern, ^[a-z_][a-z0-9\-_.]+$ ignoring case,
// written out so that parsing needs no package-level regexp.
func validKey(k string) bool {
	if len(k) < 2 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		// ASCII letters differ from their lower case only in bit 0x20.
		letter := c|0x20 >= 'a' && c|0x20 <= 'z'
		digitOrMark := c >= '0' && c <= '9' || c == '-' || c == '.'
		if !letter && c != '_' && (i == 0 || !digitOrMark) {
			return false
		}
	}
	return true
}

// validValue is docker's value pattern: letters, digits, white space and a
// few punctuation marks, but none that is, or might become, an operator.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(":-_.*()?+[]\\^$|/ \t\n\f\r", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Match reports whether node n satisfies the constraint.
func (c Constraint) Match(n *skiffpb.Node) bool {
	var equal bool
	switch c.attr.kind {
	case attrInvalid:
		return false
	case attrIP:
		equal = c.matchIP(n.GetDescription().GetAddr())
	default:
		equal = strings.EqualFold(c.attr.value(n), c.value)
	}
	return equal == (c.op == OpEqual)
}

// matchIP reports whether the node address addr, with or without a port,
// is in the constraint's prefix. A node without a usable address is in no
// prefix, as in swarmkit.
func (c Constraint) matchIP(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return false
		}
		a = ap.Addr()
	}
	return c.prefix.Contains(a.Unmap())
}

// String returns the constraint in canonical form, e.g. "node.role==manager".
func (c Constraint) String() string {
	return c.key + c.op.String() + c.value
}

// MatchConstraints reports whether node n satisfies every constraint in cs.
// The orchestrator uses it to decide which nodes a global service runs on.
func MatchConstraints(cs []Constraint, n *skiffpb.Node) bool {
	for i := range cs {
		if !cs[i].Match(n) {
			return false
		}
	}
	return true
}
