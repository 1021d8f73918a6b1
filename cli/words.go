package cli

import (
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/docker/go-units"
	"google.golang.org/protobuf/reflect/protoreflect"

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

// enum is what enumWord reads of an enum value. Generated enums have it;
// inspect, which reads fields by reflection, wraps their descriptor and
// number as a fieldEnum.
type enum interface {
	Descriptor() protoreflect.EnumDescriptor
	Number() protoreflect.EnumNumber
}

// enumWord gives an enum value as docker shows such values: the name
// without the enum's prefix, lowercase, with dashes
// (NODE_AVAILABILITY_DRAIN → "drain", RESTART_CONDITION_ON_FAILURE →
// "on-failure"). Tables capitalize it where docker's do ("Running",
// "Drain"). Deriving the words from the proto's names, rather than a table
// per enum, keeps them from going stale when a value is added; a number
// the proto does not name shows as the number.
func enumWord(e enum) string {
	ed, n := e.Descriptor(), e.Number()
	v := ed.Values().ByNumber(n)
	if v == nil {
		return strconv.Itoa(int(n))
	}
	name := strings.TrimPrefix(string(v.Name()), screamingSnake(string(ed.Name()))+"_")
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// screamingSnake turns an enum's type name into its values' prefix, by the
// protobuf style guide: NodeAvailability → NODE_AVAILABILITY.
func screamingSnake(camel string) string {
	var b strings.Builder
	for i, r := range camel {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// capitalize makes a lowercase word a table's: docker's tables say
// "Running" where its progress and inspect output say "running".
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
	word := capitalize(enumWord(st.GetState()))
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

// managerStatusWord is MANAGER STATUS in `node ls`: Leader, Reachable,
// Unreachable, and empty for workers.
func managerStatusWord(n *skiffpb.Node) string {
	if n.GetRole() != skiffpb.NodeRole_NODE_ROLE_MANAGER {
		return ""
	}
	return managerWord(n.GetManagerStatus().GetLeader(), n.GetManagerStatus().GetReachability())
}

// managerWord is a manager's status as `node ls` and `cluster info` both
// word it: the leader is "Leader" whatever its reachability. A
// reachability the proto does not name reads "Unknown", not a number,
// since the column says what the CLI knows of the manager.
func managerWord(leader bool, r skiffpb.Reachability) string {
	switch {
	case leader:
		return "Leader"
	case r == skiffpb.Reachability_REACHABILITY_REACHABLE:
		return "Reachable"
	case r == skiffpb.Reachability_REACHABILITY_UNREACHABLE:
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
