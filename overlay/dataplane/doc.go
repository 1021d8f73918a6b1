// Package dataplane builds a host's part of the overlay in the kernel,
// through netlink: the design of libnetwork's overlay driver and flannel's
// VXLAN backend, without flood-and-learn or multicast.
//
// For each overlay network the host needs, a Plane keeps
//
//	sk-br-<vni>   a Linux bridge, with the host's own address in the network
//	              and MAC overlay.MAC(that address)
//	sk-vx-<vni>   a VXLAN device (UDP 4789, local = the host's VTEP, learning
//	              off, ARP proxy on), a port of the bridge
//
// and, for each task in the network, a veth pair: the host end
// sk-<hash of task ID and VNI> is a port of the bridge, the other end is
// the task's interface (eth0) inside its sandbox namespace, with the task's
// address and MAC overlay.MAC(address). Every device has the overlay MTU,
// the underlay's less overlay.Overhead, so no inner packet needs
// fragmenting.
//
// # Remote endpoints
//
// Nothing is learned from the wire. The agent hears from gossip which
// address lives behind which VTEP and calls SetNeighbor, which programs two
// permanent entries on the VXLAN device: a neighbour entry IP → MAC, from
// which the device answers the local tasks' ARP requests itself (so no
// broadcast ever crosses the underlay), and an FDB entry MAC → VTEP, which
// says where to send the frames. MACs are derived from IPs (overlay.MAC),
// so gossip carries addresses only. A frame for an unknown MAC is dropped
// by the VXLAN device: there is no default destination.
//
// # Names and restarts
//
// Names are derived from the VNI and the task ID alone, and fit the
// kernel's 15 bytes: a restarted agent finds its devices again without any
// state of its own, and Cleanup removes those that are no longer wanted.
// The host end of a veth also carries the task ID and VNI in its alias
// ("skiff vni=4096 task=<id>"), which Detach and Cleanup read. Closing a
// Plane leaves every device in place, so tasks keep their network while the
// agent restarts.
//
// # Isolation
//
// The host has an address on every bridge, so it could route between
// networks. An nftables rule per network, in table inet sk-isolation,
// rejects anything routed from one overlay bridge to another, whatever
// net.ipv4.ip_forward says; isolate.go explains the choice.
//
// One trap lies outside the Plane. With br_netfilter loaded (a new
// namespace then starts with net.bridge.bridge-nf-call-iptables=1), frames
// bridged between a network's ports also pass the iptables FORWARD chain.
// A FORWARD policy of DROP, which dockerd sets when it manages iptables,
// then cuts every task off, local and remote alike (seen on this kernel:
// the connection times out). The testbed's engines run with
// --iptables=false; a host that lets dockerd manage iptables needs
// "iptables -I FORWARD -i sk-br-+ -o sk-br-+ -j ACCEPT" or
// bridge-nf-call-iptables=0. The isolation rule still rejects routed
// traffic between networks, since an accept in one table does not
// override a reject in another.
//
// # Offloads
//
// The kernel's defaults already keep TCP segments large end to end: veth,
// bridge and VXLAN devices all pass GSO packets through, the VXLAN device
// segments (or lets the underlay NIC segment) only once, after
// encapsulation, and the receiving host's GRO reassembles before
// decapsulation. The Plane changes one setting on purpose: the VXLAN
// device's outer UDP checksum is on (see wantVXLAN for why). It does not
// turn on GRO on the veths: that only pays for traffic that arrives
// unaggregated, which a container's own TCP stack never sends, and it
// needs ethtool rather than rtnetlink. Measurement may change this.
//
// # Namespaces
//
// A Plane works in one network namespace (Config.NetNSPath, or the
// caller's) and never moves the calling thread: it holds a netlink socket
// opened inside that namespace, opens one inside each sandbox for the
// length of an Attach, and creates each veth's sandbox end directly in the
// sandbox (IFLA_NET_NS_FD), so no interface is ever moved or renamed
// across namespaces.
//
// # Use by the agent
//
//  1. New with the host's VTEP, once at start-up.
//  2. Cleanup with the networks and tasks the agent still has, before
//     anything else: it removes what a previous run left and is no longer
//     wanted.
//  3. EnsureNetwork for every network a local task needs, before the first
//     Attach to it; calling it again at any time repairs the devices.
//  4. SetNeighbor for every endpoint of the network that lives on another
//     host, tasks and hosts' own addresses alike (never this host's own),
//     and DelNeighbor when gossip says one has gone.
//  5. Attach each task to each of its networks once its sandbox exists and
//     before its application starts; Detach when the task has stopped.
//  6. RemoveNetwork when no local task needs a network any more; it also
//     removes any attachment still on it.
//
// Every method is idempotent and may be called again after a failure or a
// restart.
package dataplane
