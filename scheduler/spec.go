package scheduler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// usage is what one task of a spec takes from the node it runs on.
type usage struct {
	need Resources
	// ports are the spec's fixed host-mode ports, without duplicates.
	ports []HostPort
	// bindings are the same ports as the task records them.
	bindings []portBinding
}

// portBinding is a skiffpb.PortBinding as a plain value, so that every
// decision can get its own messages without sharing them between tasks.
type portBinding struct {
	protocol          skiffpb.Protocol
	target, published uint32
}

// usageOf extracts from spec what each of its tasks holds on its node. Only
// host-mode ports with a fixed published port are held by the scheduler: a
// host-mode port published as 0 is picked by the engine when the container
// starts, and ingress ports are held by the routing mesh on every node.
func usageOf(spec *skiffpb.ServiceSpec) usage {
	u := usage{need: resourcesOf(spec.GetReservations())}
	for _, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishMode() != skiffpb.PublishMode_PUBLISH_MODE_HOST || p.GetPublishedPort() == 0 {
			continue
		}
		hp := HostPort{Protocol: p.GetProtocol(), Port: p.GetPublishedPort()}
		// A spec that publishes a port twice is invalid (ValidateSpec says
		// so); holding the port once keeps the node's books consistent.
		if slices.Contains(u.ports, hp) {
			continue
		}
		u.ports = append(u.ports, hp)
		u.bindings = append(u.bindings, portBinding{protocol: hp.Protocol, target: p.GetTargetPort(), published: hp.Port})
	}
	return u
}

// portBindings returns fresh messages for the ports a placed task holds.
func (u *usage) portBindings() []*skiffpb.PortBinding {
	if len(u.bindings) == 0 {
		return nil
	}
	out := make([]*skiffpb.PortBinding, len(u.bindings))
	for i, b := range u.bindings {
		out[i] = &skiffpb.PortBinding{Protocol: b.protocol, TargetPort: b.target, PublishedPort: b.published}
	}
	return out
}

// requirements is everything the filters and the strategy need to know
// about the tasks of one group (one service, one spec), parsed once for all
// of them.
type requirements struct {
	serviceID string
	usage
	constraints []Constraint
	preferences []Preference
	// maxPerNode is placement.max_replicas_per_node; 0 means no limit.
	maxPerNode int
	// err is set when the spec's placement cannot be parsed; every task of
	// the group is then unplaceable, with err as the explanation.
	err error
}

// newRequirements parses what the tasks of service serviceID running spec
// need. A nil spec needs nothing and fits anywhere available.
func newRequirements(serviceID string, spec *skiffpb.ServiceSpec) requirements {
	r := requirements{serviceID: serviceID, usage: usageOf(spec)}
	p := spec.GetPlacement()
	if m := p.GetMaxReplicasPerNode(); m > math.MaxInt32 {
		// No node holds that many tasks; treat it as the no-limit it is.
		r.maxPerNode = 0
	} else {
		r.maxPerNode = int(m)
	}
	var err error
	if r.constraints, err = ParseConstraints(p.GetConstraints()); err != nil {
		r.err = err
		return r
	}
	if r.preferences, err = ParsePreferences(p.GetPreferences()); err != nil {
		r.err = err
	}
	return r
}

// ValidateSpec reports what in spec would keep the scheduler from ever
// placing its tasks, or would make it place them wrongly: unparsable
// constraints or preferences, negative reservations, and a host-mode port
// published twice. The manager calls it when a stack is deployed, so that
// the user sees the error at once rather than as pending tasks. All problems
// are reported, joined.
func ValidateSpec(spec *skiffpb.ServiceSpec) error {
	var errs []error
	if _, err := ParseConstraints(spec.GetPlacement().GetConstraints()); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParsePreferences(spec.GetPlacement().GetPreferences()); err != nil {
		errs = append(errs, err)
	}
	res := spec.GetReservations()
	if res.GetNanoCpus() < 0 {
		errs = append(errs, fmt.Errorf("cpu reservation %d is negative", res.GetNanoCpus()))
	}
	if res.GetMemoryBytes() < 0 {
		errs = append(errs, fmt.Errorf("memory reservation %d is negative", res.GetMemoryBytes()))
	}
	seen := make(map[HostPort]bool)
	for _, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishMode() != skiffpb.PublishMode_PUBLISH_MODE_HOST || p.GetPublishedPort() == 0 {
			continue
		}
		hp := HostPort{Protocol: p.GetProtocol(), Port: p.GetPublishedPort()}
		if seen[hp] {
			errs = append(errs, fmt.Errorf("host-mode port %s is published more than once", hp))
		}
		seen[hp] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("service %q: %w", spec.GetName(), err)
	}
	return nil
}

// String formats the port as docker does, e.g. "8080/tcp".
func (p HostPort) String() string {
	proto := strings.ToLower(strings.TrimPrefix(p.Protocol.String(), "PROTOCOL_"))
	return fmt.Sprintf("%d/%s", p.Port, proto)
}
