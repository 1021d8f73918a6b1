package cli

import (
	"strings"
	"time"

	"github.com/docker/go-units"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// shortIDLen is how much of an ID tables show, as docker shows 12
// characters of its IDs. The managers resolve any unique prefix, so a
// short ID works as an argument too.
const shortIDLen = 12

// shortID truncates an ID for tables unless --no-trunc.
func shortID(id string, noTrunc bool) string {
	if noTrunc || len(id) <= shortIDLen {
		return id
	}
	return id[:shortIDLen]
}

// taskStateWord is a task state as docker prints it: "Running", "Shutdown".
func taskStateWord(st skiffpb.TaskState) string {
	return capitalize(enumWord(st.Descriptor(), st.Number()))
}

// progressWord is a task state as docker's progress bars print it:
// lowercase, "running", "pending".
func progressWord(st skiffpb.TaskState) string {
	return enumWord(st.Descriptor(), st.Number())
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// ago is docker's relative time for CURRENT STATE: "3 seconds ago", "less
// than a second ago", "about a minute ago".
func ago(now time.Time, unixNano int64) string {
	d := max(now.Sub(time.Unix(0, unixNano)), 0)
	return strings.ToLower(units.HumanDuration(d)) + " ago"
}

// currentState is CURRENT STATE: the state and how long the task has been
// in it.
func currentState(now time.Time, st *skiffpb.TaskStatus) string {
	word := taskStateWord(st.GetState())
	if st.GetTimestamp() == 0 {
		return word
	}
	return word + " " + ago(now, st.GetTimestamp())
}

// maxErrLen is how much of a task's error `service ps` shows, as docker.
const maxErrLen = 30

// taskError is ERROR: quoted, and cut as docker cuts it unless --no-trunc.
func taskError(err string, noTrunc bool) string {
	if err == "" {
		return ""
	}
	if !noTrunc && len(err) > maxErrLen {
		err = err[:maxErrLen-1] + "…"
	}
	return `"` + err + `"`
}

// nodeStatusWord is STATUS in `node ls`: Ready, Down, Unknown, Disconnected.
func nodeStatusWord(st skiffpb.NodeState) string {
	return capitalize(enumWord(st.Descriptor(), st.Number()))
}

// availabilityWord is AVAILABILITY in `node ls`: Active, Pause, Drain.
func availabilityWord(a skiffpb.NodeAvailability) string {
	return capitalize(enumWord(a.Descriptor(), a.Number()))
}

// managerStatusWord is MANAGER STATUS in `node ls`: Leader, Reachable,
// Unreachable, and empty for workers.
func managerStatusWord(n *skiffpb.Node) string {
	if n.GetRole() != skiffpb.NodeRole_NODE_ROLE_MANAGER {
		return ""
	}
	ms := n.GetManagerStatus()
	switch {
	case ms.GetLeader():
		return "Leader"
	case ms.GetReachability() == skiffpb.Reachability_REACHABILITY_REACHABLE:
		return "Reachable"
	case ms.GetReachability() == skiffpb.Reachability_REACHABILITY_UNREACHABLE:
		return "Unreachable"
	default:
		return "Unknown"
	}
}

// nodeName is how the CLI names a node: its --name, which is unique and
// what commands take; the engine's hostname only if there is no name.
func nodeName(n *skiffpb.Node) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	return n.GetDescription().GetHostname()
}

// modeWord is MODE in `service ls`: replicated or global.
func modeWord(m skiffpb.ServiceMode) string {
	return enumWord(m.Descriptor(), m.Number())
}

// protocolWord is a port's protocol as docker writes it: tcp, udp.
func protocolWord(p skiffpb.Protocol) string {
	return enumWord(p.Descriptor(), p.Number())
}
