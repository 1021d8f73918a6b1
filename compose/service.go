package compose

import (
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// service converts one compose service.
func (c *converter) service(s types.ServiceConfig) *skiffpb.ServiceSpec {
	path := []string{"services", s.Name}
	findUnmapped(reflect.ValueOf(s), serviceKeys, path, c.unsupported)

	spec := &skiffpb.ServiceSpec{
		Name:      c.fullName(s.Name),
		Stack:     c.stack,
		Container: c.container(s, path),
		Networks:  c.serviceNetworks(s, path),
		Links:     links(s),
		DependsOn: c.dependencies(s, path),
	}
	c.checkName(path, "service", spec.Name)
	c.deploy(s, path, spec)
	spec.Endpoint = &skiffpb.EndpointSpec{
		Mode:  c.endpointMode(s, path),
		Ports: c.ports(s, path),
	}
	c.checkEndpoint(spec, path)
	return spec
}

// container converts what the agent needs to create the service's
// containers.
func (c *converter) container(s types.ServiceConfig, path []string) *skiffpb.ContainerSpec {
	c.image(s, path)
	if s.Command != nil && len(s.Command) == 0 {
		c.warnf(at(path, "command"), "an empty command cannot clear the image's command in skiff: the image's command runs")
	}
	if s.Entrypoint != nil && len(s.Entrypoint) == 0 {
		c.warnf(at(path, "entrypoint"), "an empty entrypoint cannot clear the image's entrypoint in skiff: the image's entrypoint runs")
	}
	return &skiffpb.ContainerSpec{
		Image:           s.Image,
		Entrypoint:      s.Entrypoint,
		Command:         s.Command,
		Env:             environment(s.Environment),
		WorkingDir:      s.WorkingDir,
		User:            s.User,
		Hostname:        s.Hostname,
		Labels:          s.Labels,
		Mounts:          c.mounts(s, path),
		StopSignal:      s.StopSignal,
		StopGracePeriod: duration(s.StopGracePeriod),
		Healthcheck:     healthcheck(s.HealthCheck),
		CapAdd:          s.CapAdd,
		CapDrop:         s.CapDrop,
		Sysctls:         s.Sysctls,
		Ulimits:         ulimits(s.Ulimits),
		Init:            s.Init != nil && *s.Init,
		ReadOnly:        s.ReadOnly,
		Tty:             s.Tty,
		StdinOpen:       s.StdinOpen,
		PidsLimit:       pidsLimit(s),
		ExtraHosts:      extraHosts(s.ExtraHosts),
		Dns:             s.DNS,
		DnsSearch:       s.DNSSearch,
		GroupAdd:        s.GroupAdd,
		ShmSizeBytes:    int64(s.ShmSize),
	}
}

// image checks that the service names an image: the cluster runs images,
// it does not build them.
func (c *converter) image(s types.ServiceConfig, path []string) {
	switch {
	case s.Image == "" && s.Build != nil:
		c.errorf(at(path, "build"), "build is not supported by skiff; build the image and set image:")
	case s.Image == "":
		c.errorf(path, "no image: set image:")
	case s.Build != nil:
		c.warnf(at(path, "build"), "ignoring %q: skiff does not build images and runs image %s as it is", "build", s.Image)
	}
}

// environment gives the variables as KEY=VALUE, sorted by key: compose-go
// holds them in a map, so the order they were written in is lost. A
// variable listed without a value and unset in the environment is left out
// of the container, as docker compose does.
func environment(env types.MappingWithEquals) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if v := env[k]; v != nil {
			out = append(out, k+"="+*v)
		}
	}
	return out
}

func healthcheck(h *types.HealthCheckConfig) *skiffpb.HealthConfig {
	if h == nil {
		return nil
	}
	out := &skiffpb.HealthConfig{
		Test:          h.Test,
		Interval:      duration(h.Interval),
		Timeout:       duration(h.Timeout),
		StartPeriod:   duration(h.StartPeriod),
		StartInterval: duration(h.StartInterval),
	}
	if h.Retries != nil {
		out.Retries = int32(min(*h.Retries, 1<<31-1))
	}
	if h.Disable {
		out.Test = []string{"NONE"}
	}
	return out
}

// ulimits sorts the limits by name; a single value sets both soft and hard.
func ulimits(u map[string]*types.UlimitsConfig) []*skiffpb.Ulimit {
	var out []*skiffpb.Ulimit
	for _, name := range slices.Sorted(maps.Keys(u)) {
		l := u[name]
		if l == nil {
			continue
		}
		soft, hard := l.Soft, l.Hard
		if l.Single != 0 {
			soft, hard = l.Single, l.Single
		}
		out = append(out, &skiffpb.Ulimit{Name: name, Soft: int64(soft), Hard: int64(hard)})
	}
	return out
}

// extraHosts writes the entries as "name:ip", the form Docker takes, sorted
// by name.
func extraHosts(h types.HostsList) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, ip := range h[name] {
			out = append(out, name+":"+ip)
		}
	}
	return out
}

// links converts `links: [redis, "db:database"]`; a link without an alias
// is known by the service's own name.
func links(s types.ServiceConfig) []*skiffpb.Link {
	var out []*skiffpb.Link
	for _, l := range s.Links {
		svc, alias, ok := strings.Cut(l, ":")
		if !ok {
			alias = svc
		}
		out = append(out, &skiffpb.Link{Service: svc, Alias: alias})
	}
	return out
}

// dependencies converts depends_on, sorted by service. compose-go adds a
// dependency for every link (as docker compose starts linked services
// first), and so does skiff.
func (c *converter) dependencies(s types.ServiceConfig, path []string) []*skiffpb.Dependency {
	linked := map[string]bool{}
	for _, l := range links(s) {
		linked[l.Service] = true
	}
	var out []*skiffpb.Dependency
	for _, name := range slices.Sorted(maps.Keys(s.DependsOn)) {
		d := s.DependsOn[name]
		if _, ok := c.project.Services[name]; !ok && !d.Required {
			continue // an optional dependency on a service that is not there
		}
		dp := at(path, "depends_on", name)
		var cond skiffpb.DependencyCondition
		switch d.Condition {
		case "", types.ServiceConditionStarted:
			cond = skiffpb.DependencyCondition_DEPENDENCY_CONDITION_STARTED
		case types.ServiceConditionHealthy:
			cond = skiffpb.DependencyCondition_DEPENDENCY_CONDITION_HEALTHY
		case types.ServiceConditionCompletedSuccessfully:
			cond = skiffpb.DependencyCondition_DEPENDENCY_CONDITION_COMPLETED_SUCCESSFULLY
		default:
			c.errorf(at(dp, "condition"), "depends_on condition %q is not valid: use %s, %s or %s", d.Condition,
				types.ServiceConditionStarted, types.ServiceConditionHealthy, types.ServiceConditionCompletedSuccessfully)
		}
		// restart: true restarts this service when docker compose restarts
		// the dependency; skiff never does that. compose-go sets it on the
		// dependencies it adds for links, which are not the user's doing.
		if d.Restart && !linked[name] {
			c.unsupported(at(dp, "restart"))
		}
		out = append(out, &skiffpb.Dependency{Service: name, Condition: cond})
	}
	return out
}

// at extends a path without touching the caller's slice.
func at(path []string, keys ...string) []string {
	return slices.Concat(path, keys)
}
