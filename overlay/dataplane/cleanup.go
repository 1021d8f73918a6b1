package dataplane

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// Cleanup removes what an earlier run of the agent left behind and no
// longer needs: every device of this Plane's (recognised by its name
// prefix) that the arguments do not keep, and the isolation rules of the
// networks removed. A network is kept if keepNetworks holds its VNI; a
// task's veth is kept if keepTasks holds the task ID and its network is
// kept. Nil maps keep nothing, which removes all the Plane made.
//
// Cleanup carries on past a device it cannot remove and reports every
// failure at the end. What it keeps it does not check: EnsureNetwork and
// Attach repair that.
func (p *Plane) Cleanup(keepNetworks map[uint32]bool, keepTasks map[string]bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	links, err := p.linkList()
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}

	var errs []error
	remove := func(link netlink.Link, why string) {
		if err := p.deleteLink(link, why); err != nil {
			errs = append(errs, err)
		}
	}
	// Veths, then VXLAN devices, then bridges: no moment has a task on a
	// bridge that has lost its way out, or a port without its bridge.
	for _, link := range links {
		taskID, vni, ok := p.vethOwner(link)
		switch {
		case !ok:
		case taskID == "":
			remove(link, "cleanup: half-made veth")
		case !keepTasks[taskID]:
			remove(link, "cleanup: task "+taskID+" not kept")
		case !keepNetworks[vni]:
			remove(link, fmt.Sprintf("cleanup: network vni %d not kept", vni))
		}
	}
	for _, kind := range []string{"vxlan", "bridge"} {
		for _, link := range links {
			if vni, ok := p.networkOf(link); ok && link.Type() == kind && !keepNetworks[vni] {
				remove(link, fmt.Sprintf("cleanup: network vni %d not kept", vni))
			}
		}
	}
	if err := p.syncRules(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}
