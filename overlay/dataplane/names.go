package dataplane

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strconv"
	"strings"
)

// DefaultPrefix starts the name of every device a Plane creates unless
// Config.Prefix says otherwise.
const DefaultPrefix = "sk"

// maxIfName is IFNAMSIZ less the terminating NUL: the longest name the
// kernel accepts.
const maxIfName = 15

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// maxPrefix keeps the longest bridge name, "<prefix>-br-16777215", within
// maxIfName.
const maxPrefix = maxIfName - len("-br-16777215")

// The kinds of device, as they appear after "<prefix>-" in a name.
const (
	bridgeKind = "br-"
	vxlanKind  = "vx-"
)

// lowerBase32 spells veth names: letters and digits only, so a veth name
// never contains a second '-' and cannot be mistaken for a bridge's or a
// VXLAN device's.
var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// names derives every device name from what the caller already knows (a
// VNI, a task ID), never from state kept by the process: an agent that
// restarts recognises its own devices by name alone.
type names struct {
	prefix string
}

func newNames(prefix string) (names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if len(prefix) > maxPrefix {
		return names{}, fmt.Errorf("device name prefix %q: longer than %d bytes", prefix, maxPrefix)
	}
	for i, c := range prefix {
		letter := c >= 'a' && c <= 'z'
		digit := c >= '0' && c <= '9'
		if !letter && !(digit && i > 0) {
			return names{}, fmt.Errorf("device name prefix %q: use a lowercase letter, then letters or digits", prefix)
		}
	}
	return names{prefix: prefix}, nil
}

// bridge is the network's Linux bridge, e.g. "sk-br-4096".
func (n names) bridge(vni uint32) string {
	return n.prefix + "-" + bridgeKind + strconv.FormatUint(uint64(vni), 10)
}

// vxlan is the network's VXLAN device, e.g. "sk-vx-4096".
func (n names) vxlan(vni uint32) string {
	return n.prefix + "-" + vxlanKind + strconv.FormatUint(uint64(vni), 10)
}

// veth is the host end of a task's veth in one network, e.g.
// "sk-q3x7pb2kd9aa". A task may join several networks, so the name hashes
// the task ID with the VNI; the hash also keeps any task ID within
// IFNAMSIZ. The full task ID and VNI are kept in the link's alias (see
// vethAlias), which is how Detach and Cleanup find a task's veths and how
// Attach tells a hash collision from its own device.
func (n names) veth(taskID string, vni uint32) string {
	sum := sha256.Sum256([]byte(taskID + "/" + strconv.FormatUint(uint64(vni), 10)))
	return n.prefix + "-" + lowerBase32.EncodeToString(sum[:])[:maxIfName-len(n.prefix)-1]
}

// ours reports whether a device name is in this Plane's namespace of
// names.
func (n names) ours(name string) bool {
	return strings.HasPrefix(name, n.prefix+"-")
}

// parseVNI returns the VNI of a bridge or VXLAN device name of the given
// kind (bridgeKind or vxlanKind).
func (n names) parseVNI(name, kind string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, n.prefix+"-"+kind)
	if !ok || rest == "" || (rest[0] == '0' && rest != "0") {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 32)
	if err != nil || v == 0 || v > maxVNI {
		return 0, false
	}
	return uint32(v), true
}

// isVeth reports whether name has the shape of one of this Plane's veth
// names.
func (n names) isVeth(name string) bool {
	rest, ok := strings.CutPrefix(name, n.prefix+"-")
	return ok && len(rest) == maxIfName-len(n.prefix)-1 && !strings.Contains(rest, "-")
}

// aliasTag starts the alias of every veth a Plane creates.
const aliasTag = "skiff"

// vethAlias is the IFLA_IFALIAS of a task's host-side veth: "skiff vni=4096
// task=<task ID>". The task ID comes last so that it may hold any
// character.
func vethAlias(taskID string, vni uint32) string {
	return fmt.Sprintf("%s vni=%d task=%s", aliasTag, vni, taskID)
}

// parseVethAlias is the inverse of vethAlias.
func parseVethAlias(alias string) (taskID string, vni uint32, ok bool) {
	rest, ok := strings.CutPrefix(alias, aliasTag+" vni=")
	if !ok {
		return "", 0, false
	}
	num, taskID, ok := strings.Cut(rest, " task=")
	if !ok || taskID == "" {
		return "", 0, false
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil || v == 0 || v > maxVNI {
		return "", 0, false
	}
	return taskID, uint32(v), true
}

func checkVNI(vni uint32) error {
	if vni == 0 || vni > maxVNI {
		return fmt.Errorf("vni %d: want 1 to %d", vni, maxVNI)
	}
	return nil
}
