package compose

import (
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestNanoCPUs(t *testing.T) {
	for _, tc := range []struct {
		cpus float32
		want int64
	}{
		{0, 0},
		{0.1, 100_000_000}, // float32(0.1) is 0.100000001
		{0.25, 250_000_000},
		{0.3, 300_000_000},
		{1.5, 1_500_000_000},
		{2, 2_000_000_000},
		{0.001, 1_000_000},
	} {
		if got := nanoCPUs(tc.cpus); got != tc.want {
			t.Errorf("nanoCPUs(%v) = %d, want %d", tc.cpus, got, tc.want)
		}
	}
}

// TestRestart checks the service-level restart: key, which stands in for
// deploy.restart_policy.
func TestRestart(t *testing.T) {
	anyCond := skiffpb.RestartCondition_RESTART_CONDITION_ANY
	for _, tc := range []struct {
		restart string
		want    *skiffpb.RestartPolicy
	}{
		{`""`, &skiffpb.RestartPolicy{Condition: anyCond, Delay: int64(DefaultRestartDelay)}},
		{"always", &skiffpb.RestartPolicy{Condition: anyCond, Delay: int64(DefaultRestartDelay)}},
		{"unless-stopped", &skiffpb.RestartPolicy{Condition: anyCond, Delay: int64(DefaultRestartDelay)}},
		{`"no"`, &skiffpb.RestartPolicy{Condition: skiffpb.RestartCondition_RESTART_CONDITION_NONE, Delay: int64(DefaultRestartDelay)}},
		{"on-failure", &skiffpb.RestartPolicy{Condition: skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE, Delay: int64(DefaultRestartDelay)}},
		{"on-failure:5", &skiffpb.RestartPolicy{Condition: skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE, Delay: int64(DefaultRestartDelay), MaxAttempts: 5}},
	} {
		t.Run(tc.restart, func(t *testing.T) {
			spec, warnings := mustLoad(t, writeCompose(t, "services:\n  web:\n    image: skiff-test/web:latest\n    restart: "+tc.restart+"\n"))
			assertNoWarnings(t, warnings)
			assertProto(t, service(t, spec, "web").RestartPolicy, tc.want)
		})
	}
}

// TestUpdateConfigDefaults checks Swarm's defaults for the keys an
// update_config leaves out.
func TestUpdateConfigDefaults(t *testing.T) {
	spec, _ := mustLoad(t, writeCompose(t, `services:
  web:
    image: skiff-test/web:latest
    deploy:
      update_config:
        delay: 10s
`))
	assertProto(t, service(t, spec, "web").UpdateConfig, &skiffpb.UpdateConfig{
		Parallelism:   DefaultUpdateParallelism,
		Delay:         10_000_000_000,
		Monitor:       int64(DefaultUpdateMonitor),
		FailureAction: skiffpb.FailureAction_FAILURE_ACTION_PAUSE,
		Order:         skiffpb.UpdateOrder_UPDATE_ORDER_STOP_FIRST,
	})
}
