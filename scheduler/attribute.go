package scheduler

import (
	"errors"
	"strings"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// attrKind is which property of a node a constraint key or a spread
// descriptor names.
type attrKind int

const (
	// attrInvalid is the zero value, so that a Constraint not made by
	// ParseConstraints matches nothing rather than everything.
	attrInvalid attrKind = iota
	attrID
	attrHostname
	attrRole
	attrIP
	attrOS
	attrArch
	attrNodeLabel
	attrEngineLabel
)

const (
	nodeLabelPrefix   = "node.labels."
	engineLabelPrefix = "engine.labels."
)

// errUnknownKey and errNoLabelName are the ways a key can fail to resolve.
var (
	errUnknownKey  = errors.New("unknown key")
	errNoLabelName = errors.New("missing label name")
)

// nodeAttr is a resolved key: a kind and, for labels, the label's name.
type nodeAttr struct {
	kind attrKind
	// label is case-sensitive, as node and engine labels are.
	label string
}

// parseAttr resolves key, which has been trimmed of white space.
func parseAttr(key string) (nodeAttr, error) {
	// The keys without a label name compare case-insensitively, as in
	// docker.
	fixed := [...]struct {
		key  string
		kind attrKind
	}{
		{"node.id", attrID},
		{"node.hostname", attrHostname},
		{"node.role", attrRole},
		{"node.ip", attrIP},
		{"node.platform.os", attrOS},
		{"node.platform.arch", attrArch},
	}
	for _, f := range fixed {
		if strings.EqualFold(key, f.key) {
			return nodeAttr{kind: f.kind}, nil
		}
	}
	for _, l := range [...]struct {
		prefix string
		kind   attrKind
	}{{nodeLabelPrefix, attrNodeLabel}, {engineLabelPrefix, attrEngineLabel}} {
		if len(key) >= len(l.prefix) && strings.EqualFold(key[:len(l.prefix)], l.prefix) {
			if len(key) == len(l.prefix) {
				return nodeAttr{}, errNoLabelName
			}
			return nodeAttr{kind: l.kind, label: key[len(l.prefix):]}, nil
		}
	}
	return nodeAttr{}, errUnknownKey
}

// value is the attribute's value on node n. Anything the node does not
// report reads as "", as in swarmkit: "node.labels.zone != a" then holds on
// a node without a zone label, and "== a" does not.
func (a nodeAttr) value(n *skiffpb.Node) string {
	switch a.kind {
	case attrID:
		return n.GetId()
	case attrHostname:
		// An agent that has not reported its description yet is still known
		// by its --name, which the testbed makes equal to the hostname.
		if h := n.GetDescription().GetHostname(); h != "" {
			return h
		}
		return n.GetName()
	case attrRole:
		return roleName(n.GetRole())
	case attrIP:
		return n.GetDescription().GetAddr()
	case attrOS:
		return n.GetDescription().GetOs()
	case attrArch:
		return n.GetDescription().GetArch()
	case attrNodeLabel:
		return n.GetSpec().GetLabels()[a.label]
	case attrEngineLabel:
		return n.GetDescription().GetEngineLabels()[a.label]
	}
	return ""
}

// roleName is a role as constraints spell it.
func roleName(r skiffpb.NodeRole) string {
	if r == skiffpb.NodeRole_NODE_ROLE_MANAGER {
		return "manager"
	}
	return "worker"
}
