package compose

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// defaultNetwork is the key of the network that services listing no
// networks join, as <stack>_default.
const defaultNetwork = "default"

// serviceNetworks converts a service's networks, sorted by name. compose-go
// has put services without networks on the default network already, except
// those with network_mode, which skiff ignores (with a warning), so that
// they join the default network as under docker stack deploy.
func (c *converter) serviceNetworks(s types.ServiceConfig, path []string) []*skiffpb.ServiceNetwork {
	keys := slices.Sorted(maps.Keys(s.Networks))
	if len(keys) == 0 {
		keys = []string{defaultNetwork}
	}
	out := make([]*skiffpb.ServiceNetwork, 0, len(keys))
	for _, key := range keys {
		c.usedNetworks[key] = true
		n := &skiffpb.ServiceNetwork{Target: c.fullName(key)}
		if cfg := s.Networks[key]; cfg != nil {
			n.Aliases = cfg.Aliases
		}
		out = append(out, n)
	}
	return out
}

// networks converts the networks that services use, sorted by name. Like
// docker stack deploy, skiff creates no network that no service joins.
func (c *converter) networks() []*skiffpb.NetworkSpec {
	var out []*skiffpb.NetworkSpec
	for _, key := range slices.Sorted(maps.Keys(c.usedNetworks)) {
		// The default network is implicit unless the file configures it.
		n := c.project.Networks[key]
		out = append(out, c.network(key, n))
	}
	return out
}

// network converts one network. skiff runs only overlay networks that it
// creates for the stack itself; an external network, which another stack
// or tool would own, is therefore an error rather than a network silently
// replaced by a private one.
func (c *converter) network(key string, n types.NetworkConfig) *skiffpb.NetworkSpec {
	path := []string{"networks", key}
	name := c.fullName(key)
	findUnmapped(reflect.ValueOf(n), networkKeys, path, c.unsupported)
	c.checkName(path, "network", name)

	if n.External {
		c.errorf(at(path, "external"), "external networks are not supported: skiff connects services only to the overlay networks it creates for the stack; remove external: true (and name:) to have the stack create %s", name)
	}
	if n.Name != "" && n.Name != name && !n.External {
		c.warnf(at(path, "name"), "ignoring name %q: skiff names the network %s", n.Name, name)
	}
	if n.Driver != "" && n.Driver != "overlay" {
		c.warnf(at(path, "driver"), "ignoring driver %q: skiff runs every network as an overlay", n.Driver)
	}

	spec := &skiffpb.NetworkSpec{
		Name:       name,
		Stack:      c.stack,
		Driver:     "overlay",
		Labels:     n.Labels,
		Internal:   n.Internal,
		Attachable: n.Attachable,
	}
	if pools := n.Ipam.Config; len(pools) > 0 && pools[0] != nil {
		spec.Subnet = pools[0].Subnet
		if len(pools) > 1 {
			c.warnf(at(path, "ipam", "config"), "ignoring all ipam.config entries but the first: a skiff network has one subnet")
		}
		if p, err := netip.ParsePrefix(spec.Subnet); spec.Subnet != "" && (err != nil || p.Masked() != p) {
			c.errorf(at(path, "ipam", "config", "0", "subnet"), "subnet %q is not a network in CIDR form (e.g. 10.20.0.0/24)", spec.Subnet)
		}
	}
	return spec
}
