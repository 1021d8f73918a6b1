package compose

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Swarm's defaults for what a compose file leaves out, so that a stack
// behaves as it did under docker stack deploy. The spec always carries the
// values in full: a manager never has to tell "unset" from zero.
const (
	// DefaultRestartDelay is how long a failed task's slot waits before its
	// replacement starts, when restart_policy gives no delay.
	DefaultRestartDelay = 5 * time.Second
	// DefaultUpdateParallelism is how many tasks a rolling update (or
	// rollback) replaces at once when update_config gives no parallelism.
	DefaultUpdateParallelism = 1
	// DefaultUpdateMonitor is how long a rolling update watches a new task
	// for failure when update_config gives no monitor.
	DefaultUpdateMonitor = 5 * time.Second
)

// deploy fills in the deploy section: mode and replicas, restart and update
// policies, placement, resources and service labels.
func (c *converter) deploy(s types.ServiceConfig, path []string, spec *skiffpb.ServiceSpec) {
	d := s.Deploy
	if d == nil {
		d = &types.DeployConfig{}
	}
	dp := at(path, "deploy")
	spec.Labels = d.Labels
	spec.Mode, spec.Replicas = c.replicas(s, d, dp)
	spec.RestartPolicy = c.restartPolicy(s, d, path)
	spec.UpdateConfig = c.updateConfig(d.UpdateConfig, at(dp, "update_config"), false)
	spec.RollbackConfig = c.updateConfig(d.RollbackConfig, at(dp, "rollback_config"), true)
	spec.Placement = c.placement(d.Placement, at(dp, "placement"))
	if spec.Mode == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL && spec.Placement.MaxReplicasPerNode > 0 {
		c.errorf(at(dp, "placement", "max_replicas_per_node"), "a global service runs one task per node already: remove max_replicas_per_node")
	}
	spec.Limits, spec.Reservations = resources(s, d)
}

// replicas gives the mode and, for a replicated service, the number of
// tasks: deploy.replicas, else the v2-style scale, else 1.
func (c *converter) replicas(s types.ServiceConfig, d *types.DeployConfig, dp []string) (skiffpb.ServiceMode, uint64) {
	// compose-go copies scale into deploy.replicas when both keys exist,
	// so scale, when set, is what the user wrote.
	count, countPath := d.Replicas, at(dp, "replicas")
	if s.Scale != nil {
		count, countPath = s.Scale, at(dp[:len(dp)-1], "scale")
	}
	switch d.Mode {
	case "", "replicated":
		if count == nil {
			return skiffpb.ServiceMode_SERVICE_MODE_REPLICATED, 1
		}
		return skiffpb.ServiceMode_SERVICE_MODE_REPLICATED, uint64(max(*count, 0))
	case "global":
		if count != nil {
			c.errorf(countPath, "a global service runs one task on every node and cannot set replicas: remove %s or use deploy.mode: replicated", countPath[len(countPath)-1])
		}
		return skiffpb.ServiceMode_SERVICE_MODE_GLOBAL, 0
	case "replicated-job", "global-job":
		c.errorf(at(dp, "mode"), "deploy.mode %q is not supported: skiff runs services, not jobs", d.Mode)
	default:
		c.errorf(at(dp, "mode"), "deploy.mode %q is not valid: use replicated or global", d.Mode)
	}
	return skiffpb.ServiceMode_SERVICE_MODE_REPLICATED, 0
}

// restartPolicy converts deploy.restart_policy, or else the service-level
// restart: that docker compose uses (docker stack deploy falls back on it
// too).
func (c *converter) restartPolicy(s types.ServiceConfig, d *types.DeployConfig, path []string) *skiffpb.RestartPolicy {
	out := &skiffpb.RestartPolicy{
		Condition: skiffpb.RestartCondition_RESTART_CONDITION_ANY,
		Delay:     int64(DefaultRestartDelay),
	}
	if rp := d.RestartPolicy; rp != nil {
		if s.Restart != "" {
			c.warnf(at(path, "restart"), "ignoring %q: deploy.restart_policy is set and takes precedence", "restart")
		}
		rpp := at(path, "deploy", "restart_policy")
		switch rp.Condition {
		case "", "any":
		case "on-failure":
			out.Condition = skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE
		case "none":
			out.Condition = skiffpb.RestartCondition_RESTART_CONDITION_NONE
		default:
			c.errorf(at(rpp, "condition"), "restart_policy condition %q is not valid: use none, on-failure or any", rp.Condition)
		}
		if rp.Delay != nil {
			out.Delay = int64(*rp.Delay)
		}
		if rp.MaxAttempts != nil {
			out.MaxAttempts = *rp.MaxAttempts
		}
		out.Window = duration(rp.Window)
		return out
	}

	policy, arg, hasArg := strings.Cut(s.Restart, ":")
	switch {
	case policy == "" || policy == types.RestartPolicyAlways || policy == types.RestartPolicyUnlessStopped:
		if !hasArg {
			return out
		}
	case policy == types.RestartPolicyNo:
		if !hasArg {
			out.Condition = skiffpb.RestartCondition_RESTART_CONDITION_NONE
			return out
		}
	case policy == types.RestartPolicyOnFailure:
		out.Condition = skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE
		if !hasArg {
			return out
		}
		if n, err := strconv.ParseUint(arg, 10, 64); err == nil {
			out.MaxAttempts = n
			return out
		}
	}
	c.errorf(at(path, "restart"), "restart %q is not valid: use no, always, unless-stopped, on-failure or on-failure:N", s.Restart)
	return out
}

// updateConfig converts update_config or rollback_config.
func (c *converter) updateConfig(u *types.UpdateConfig, path []string, rollback bool) *skiffpb.UpdateConfig {
	out := &skiffpb.UpdateConfig{
		Parallelism:   DefaultUpdateParallelism,
		Monitor:       int64(DefaultUpdateMonitor),
		FailureAction: skiffpb.FailureAction_FAILURE_ACTION_PAUSE,
		Order:         skiffpb.UpdateOrder_UPDATE_ORDER_STOP_FIRST,
	}
	if u == nil {
		return out
	}
	if u.Parallelism != nil {
		out.Parallelism = *u.Parallelism
	}
	out.Delay = int64(u.Delay)
	// compose-go cannot tell an absent monitor from 0s; no monitoring at
	// all is never what a file means, so both get the default.
	if u.Monitor != 0 {
		out.Monitor = int64(u.Monitor)
	}
	out.MaxFailureRatio = decimal(u.MaxFailureRatio)

	switch u.FailureAction {
	case "", "pause":
	case "continue":
		out.FailureAction = skiffpb.FailureAction_FAILURE_ACTION_CONTINUE
	case "rollback":
		if rollback {
			c.errorf(at(path, "failure_action"), "rollback_config failure_action %q is not valid: a rollback can only pause or continue", u.FailureAction)
		}
		out.FailureAction = skiffpb.FailureAction_FAILURE_ACTION_ROLLBACK
	default:
		c.errorf(at(path, "failure_action"), "failure_action %q is not valid: use pause, continue or rollback", u.FailureAction)
	}

	switch u.Order {
	case "", "stop-first":
	case "start-first":
		out.Order = skiffpb.UpdateOrder_UPDATE_ORDER_START_FIRST
	default:
		c.errorf(at(path, "order"), "order %q is not valid: use stop-first or start-first", u.Order)
	}
	return out
}

// placement converts deploy.placement. Constraints are passed on as
// written: the scheduler parses and checks them.
func (c *converter) placement(p types.Placement, path []string) *skiffpb.Placement {
	out := &skiffpb.Placement{
		Constraints:        p.Constraints,
		MaxReplicasPerNode: p.MaxReplicas,
	}
	for i, pref := range p.Preferences {
		if pref.Spread == "" {
			c.errorf(at(path, "preferences", strconv.Itoa(i)), "a placement preference needs spread: (e.g. spread: node.labels.zone)")
			continue
		}
		out.Preferences = append(out.Preferences, &skiffpb.PlacementPreference{Spread: pref.Spread})
	}
	return out
}

// resources converts deploy.resources, falling back on the v2-style cpus,
// mem_limit and mem_reservation. compose-go has already rejected a file
// where both forms are set and differ.
func resources(s types.ServiceConfig, d *types.DeployConfig) (limits, reservations *skiffpb.Resources) {
	limits, reservations = &skiffpb.Resources{}, &skiffpb.Resources{}
	if l := d.Resources.Limits; l != nil {
		limits.NanoCpus = nanoCPUs(float32(l.NanoCPUs))
		limits.MemoryBytes = int64(l.MemoryBytes)
	}
	if r := d.Resources.Reservations; r != nil {
		reservations.NanoCpus = nanoCPUs(float32(r.NanoCPUs))
		reservations.MemoryBytes = int64(r.MemoryBytes)
	}
	if limits.NanoCpus == 0 {
		limits.NanoCpus = nanoCPUs(s.CPUS)
	}
	if limits.MemoryBytes == 0 {
		limits.MemoryBytes = int64(s.MemLimit)
	}
	if reservations.MemoryBytes == 0 {
		reservations.MemoryBytes = int64(s.MemReservation)
	}
	return limits, reservations
}

// pidsLimit is deploy.resources.limits.pids, else the v2-style pids_limit.
func pidsLimit(s types.ServiceConfig) int64 {
	if s.Deploy != nil && s.Deploy.Resources.Limits != nil && s.Deploy.Resources.Limits.Pids != 0 {
		return s.Deploy.Resources.Limits.Pids
	}
	return s.PidsLimit
}

// nanoCPUs converts a number of CPUs as Docker counts them. compose-go
// holds cpus as a float32, in which "0.1" is 0.100000001; going through the
// shortest decimal that float32 prints as recovers what the user wrote, so
// that cpus: "0.1" is exactly 100000000 nano CPUs, as docker makes it.
func nanoCPUs(cpus float32) int64 {
	return int64(math.Round(decimal(cpus) * 1e9))
}

// decimal widens a float32 to the float64 of the decimal it was written as.
func decimal(f float32) float64 {
	d, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'f', -1, 32), 64)
	if err != nil {
		return float64(f) // unreachable: FormatFloat writes a valid float
	}
	return d
}

// duration converts an optional compose duration to nanoseconds.
func duration(d *types.Duration) int64 {
	if d == nil {
		return 0
	}
	return int64(*d)
}
