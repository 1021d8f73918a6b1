// Package overlay holds what the overlay's parts share. The parts are:
//
//   - overlay/dataplane: Linux bridges, VXLAN devices, veths into task
//     sandboxes, and the static neighbour (ARP) and FDB entries for remote
//     endpoints, all through netlink;
//   - overlay/endpoints: the table of endpoints (which IP lives on which
//     host), spread by memberlist gossip;
//   - overlay/dns: the embedded DNS server each host runs in each network;
//   - overlay/mesh: the routing mesh, which answers published ports on
//     every host and forwards to a running task anywhere.
//
// The design is libnetwork's overlay and flannel's VXLAN backend: managers
// allocate a VNI and a subnet per network and an IP per task through Raft,
// so addresses never conflict, and hosts learn where each address lives from
// gossip instead of from multicast or flood-and-learn.
package overlay

import (
	"net"
	"net/netip"
)

// VXLANPort is the IANA VXLAN port, as Docker's overlay uses.
const VXLANPort = 4789

// Overhead is what VXLAN encapsulation adds to a frame (outer IPv4, UDP,
// VXLAN header and inner Ethernet), so overlay devices use the underlay MTU
// minus this.
const Overhead = 50

// Endpoint is one address in an overlay network: a task's, or a host's own
// address in that network.
type Endpoint struct {
	// NetworkID and VNI name the network.
	NetworkID string
	VNI       uint32
	// IP is the endpoint's address in the network.
	IP netip.Addr
	// VTEP is the underlay address of the host that holds the endpoint:
	// where VXLAN packets for IP are sent.
	VTEP netip.Addr
	// Node is the name of that host.
	Node string

	// The rest is for the embedded DNS; it is empty for a host's own
	// address.

	// TaskID is the task the endpoint belongs to.
	TaskID string
	// Service is the service's full name (<stack>_<service>), Stack its
	// stack, and ShortName the name within the stack (<service>).
	Service   string
	Stack     string
	ShortName string
	// Aliases are extra names for the endpoint in this network (compose
	// networks.aliases).
	Aliases []string
	// Links maps a name the task may look up to the short name of another
	// service of its stack (compose links: "redis:db" gives db → redis).
	Links map[string]string
	// Published are the ports the task's service publishes through the
	// routing mesh. Carrying them on the endpoints lets every host learn,
	// from gossip alone, which ports to answer and where to send them, so
	// the mesh keeps working while no manager is reachable.
	Published []Port
}

// Port is a port a service publishes through the routing mesh.
type Port struct {
	// Protocol is "tcp" or "udp".
	Protocol  string
	Published uint16
	Target    uint16
}

// MAC is the endpoint's MAC address, derived from its IPv4 address as
// Docker does (02:42 followed by the four address bytes). Deriving it means
// the MAC never has to be gossiped or allocated, and a neighbour entry can
// be programmed from the IP alone.
func MAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}
