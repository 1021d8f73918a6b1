package docker

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/strslice"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// minimal is the smallest assignment that makes a container.
func minimal() *skiffpb.Assignment {
	return &skiffpb.Assignment{
		Task: &skiffpb.Task{Id: "t1", ServiceId: "s1", ServiceName: "shop_web", Stack: "shop", Slot: 2},
		Spec: &skiffpb.ServiceSpec{Name: "shop_web", Stack: "shop", Container: &skiffpb.ContainerSpec{Image: "web:1"}},
	}
}

func ownLabels(extra map[string]string) map[string]string {
	l := map[string]string{
		LabelTaskID: "t1", LabelNode: "n1", LabelService: "shop_web",
		LabelServiceID: "s1", LabelStack: "shop", LabelSlot: "2",
	}
	for k, v := range extra {
		l[k] = v
	}
	return l
}

func TestContainerConfig(t *testing.T) {
	pids := int64(64)
	stop := 3
	on := true
	tests := []struct {
		name     string
		edit     func(a *skiffpb.Assignment)
		network  string
		wantCfg  *container.Config
		wantHost *container.HostConfig
	}{
		{
			name:    "minimal",
			edit:    func(*skiffpb.Assignment) {},
			network: "none",
			wantCfg: &container.Config{Image: "web:1", Labels: ownLabels(nil)},
			wantHost: &container.HostConfig{
				NetworkMode:   "none",
				RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
			},
		},
		{
			name: "everything",
			edit: func(a *skiffpb.Assignment) {
				a.Spec.Limits = &skiffpb.Resources{NanoCpus: 1500000000, MemoryBytes: 256 << 20}
				// Reservations are the scheduler's; they must not reach the engine.
				a.Spec.Reservations = &skiffpb.Resources{NanoCpus: 1, MemoryBytes: 1}
				a.Spec.Container = &skiffpb.ContainerSpec{
					Image:           "web:1",
					Entrypoint:      []string{"/bin/web"},
					Command:         []string{"--port", "80"},
					Env:             []string{"A=1", "B=2"},
					WorkingDir:      "/srv",
					User:            "1000:1000",
					Hostname:        "web-host",
					Labels:          map[string]string{"app": "web"},
					StopSignal:      "SIGQUIT",
					StopGracePeriod: int64(2500 * time.Millisecond),
					Healthcheck: &skiffpb.HealthConfig{
						Test: []string{"CMD", "/probe"}, Interval: int64(time.Second), Timeout: int64(2 * time.Second),
						StartPeriod: int64(3 * time.Second), StartInterval: int64(100 * time.Millisecond), Retries: 4,
					},
					CapAdd:       []string{"NET_ADMIN"},
					CapDrop:      []string{"MKNOD"},
					Sysctls:      map[string]string{"net.core.somaxconn": "1024"},
					Ulimits:      []*skiffpb.Ulimit{{Name: "nofile", Soft: 1024, Hard: 2048}},
					Init:         true,
					ReadOnly:     true,
					Tty:          true,
					StdinOpen:    true,
					PidsLimit:    64,
					ExtraHosts:   []string{"db:10.0.0.2"},
					Dns:          []string{"10.0.0.53"},
					DnsSearch:    []string{"shop.internal"},
					GroupAdd:     []string{"audio"},
					ShmSizeBytes: 64 << 20,
				}
			},
			network: "container:sandbox",
			wantCfg: &container.Config{
				Image:      "web:1",
				Entrypoint: strslice.StrSlice{"/bin/web"},
				Cmd:        strslice.StrSlice{"--port", "80"},
				Env:        []string{"A=1", "B=2"},
				WorkingDir: "/srv",
				User:       "1000:1000",
				Hostname:   "web-host",
				Labels:     ownLabels(map[string]string{"app": "web"}),
				StopSignal: "SIGQUIT",
				// 2.5 s rounds up: the engine counts whole seconds.
				StopTimeout: &stop,
				Healthcheck: &container.HealthConfig{
					Test: []string{"CMD", "/probe"}, Interval: time.Second, Timeout: 2 * time.Second,
					StartPeriod: 3 * time.Second, StartInterval: 100 * time.Millisecond, Retries: 4,
				},
				Tty:       true,
				OpenStdin: true,
			},
			wantHost: &container.HostConfig{
				NetworkMode:    "container:sandbox",
				RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
				CapAdd:         strslice.StrSlice{"NET_ADMIN"},
				CapDrop:        strslice.StrSlice{"MKNOD"},
				Sysctls:        map[string]string{"net.core.somaxconn": "1024"},
				ReadonlyRootfs: true,
				ExtraHosts:     []string{"db:10.0.0.2"},
				DNS:            []string{"10.0.0.53"},
				DNSSearch:      []string{"shop.internal"},
				GroupAdd:       []string{"audio"},
				ShmSize:        64 << 20,
				Init:           &on,
				Resources: container.Resources{
					NanoCPUs:  1500000000,
					Memory:    256 << 20,
					PidsLimit: &pids,
					Ulimits:   []*container.Ulimit{{Name: "nofile", Soft: 1024, Hard: 2048}},
				},
			},
		},
		{
			name: "user labels cannot claim ownership",
			edit: func(a *skiffpb.Assignment) {
				a.Spec.Container.Labels = map[string]string{LabelNode: "other", LabelTaskID: "t9", "keep": "me"}
			},
			network:  "none",
			wantCfg:  &container.Config{Image: "web:1", Labels: ownLabels(map[string]string{"keep": "me"})},
			wantHost: &container.HostConfig{NetworkMode: "none", RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled}},
		},
		{
			name: "mounts",
			edit: func(a *skiffpb.Assignment) {
				a.Spec.Container.Mounts = []*skiffpb.Mount{
					{Type: skiffpb.MountType_MOUNT_TYPE_BIND, Source: "/srv/data", Target: "/data", ReadOnly: true, BindCreateHostPath: true, BindPropagation: "rslave"},
					{Type: skiffpb.MountType_MOUNT_TYPE_BIND, Source: "/etc/app", Target: "/etc/app", BindPropagation: "rprivate"},
					{Type: skiffpb.MountType_MOUNT_TYPE_BIND, Source: "/plain", Target: "/plain"},
					{Type: skiffpb.MountType_MOUNT_TYPE_VOLUME, Source: "shop_db", Target: "/var/lib/db", VolumeNoCopy: true,
						VolumeDriver: "local", VolumeDriverOpts: map[string]string{"type": "tmpfs"}, VolumeLabels: map[string]string{"k": "v"}},
					{Type: skiffpb.MountType_MOUNT_TYPE_VOLUME, Target: "/cache"},
					{Type: skiffpb.MountType_MOUNT_TYPE_TMPFS, Target: "/tmp", TmpfsSizeBytes: 1 << 20, TmpfsMode: 0o1777},
					{Type: skiffpb.MountType_MOUNT_TYPE_TMPFS, Target: "/run"},
				}
			},
			network: "none",
			wantCfg: &container.Config{Image: "web:1", Labels: ownLabels(nil)},
			wantHost: &container.HostConfig{
				NetworkMode:   "none",
				RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
				Binds:         []string{"/srv/data:/data:ro,rslave"},
				Mounts: []mount.Mount{
					{Type: mount.TypeBind, Source: "/etc/app", Target: "/etc/app", BindOptions: &mount.BindOptions{Propagation: "rprivate"}},
					{Type: mount.TypeBind, Source: "/plain", Target: "/plain"},
					{Type: mount.TypeVolume, Source: "shop_db", Target: "/var/lib/db", VolumeOptions: &mount.VolumeOptions{
						NoCopy: true, Labels: map[string]string{"k": "v"},
						DriverConfig: &mount.Driver{Name: "local", Options: map[string]string{"type": "tmpfs"}},
					}},
					{Type: mount.TypeVolume, Target: "/cache"},
					{Type: mount.TypeTmpfs, Target: "/tmp", TmpfsOptions: &mount.TmpfsOptions{SizeBytes: 1 << 20, Mode: 0o1777}},
					{Type: mount.TypeTmpfs, Target: "/run"},
				},
			},
		},
		{
			name: "healthcheck NONE disables the image's",
			edit: func(a *skiffpb.Assignment) {
				a.Spec.Container.Healthcheck = &skiffpb.HealthConfig{Test: []string{"NONE"}}
			},
			network:  "none",
			wantCfg:  &container.Config{Image: "web:1", Labels: ownLabels(nil), Healthcheck: &container.HealthConfig{Test: []string{"NONE"}}},
			wantHost: &container.HostConfig{NetworkMode: "none", RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled}},
		},
		{
			name: "empty healthcheck keeps the image's",
			edit: func(a *skiffpb.Assignment) {
				a.Spec.Container.Healthcheck = &skiffpb.HealthConfig{}
			},
			network:  "none",
			wantCfg:  &container.Config{Image: "web:1", Labels: ownLabels(nil)},
			wantHost: &container.HostConfig{NetworkMode: "none", RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := minimal()
			tt.edit(a)
			cfg, host, err := containerConfig(a, "n1", tt.network)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, tt.wantCfg) {
				t.Errorf("config\n got %+v\nwant %+v", cfg, tt.wantCfg)
			}
			if !reflect.DeepEqual(host, tt.wantHost) {
				t.Errorf("host config\n got %+v\nwant %+v", host, tt.wantHost)
			}
		})
	}
}

func TestContainerConfigRejects(t *testing.T) {
	tests := []struct {
		name string
		a    func() *skiffpb.Assignment
		want string
	}{
		{"nil", func() *skiffpb.Assignment { return nil }, "without task"},
		{"no container spec", func() *skiffpb.Assignment { a := minimal(); a.Spec.Container = nil; return a }, "container spec"},
		{"no task id", func() *skiffpb.Assignment { a := minimal(); a.Task.Id = ""; return a }, "task id"},
		{"no image", func() *skiffpb.Assignment { a := minimal(); a.Spec.Container.Image = ""; return a }, "no image"},
		{"mount without target", func() *skiffpb.Assignment {
			a := minimal()
			a.Spec.Container.Mounts = []*skiffpb.Mount{{Type: skiffpb.MountType_MOUNT_TYPE_VOLUME, Source: "v"}}
			return a
		}, "no target"},
		{"bind without source", func() *skiffpb.Assignment {
			a := minimal()
			a.Spec.Container.Mounts = []*skiffpb.Mount{{Type: skiffpb.MountType_MOUNT_TYPE_BIND, Target: "/x"}}
			return a
		}, "no source"},
		{"unknown mount type", func() *skiffpb.Assignment {
			a := minimal()
			a.Spec.Container.Mounts = []*skiffpb.Mount{{Type: 42, Target: "/x"}}
			return a
		}, "unsupported type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := containerConfig(tt.a(), "n1", "none")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestContainerName(t *testing.T) {
	tests := []struct {
		service, node string
		slot          uint64
		task, want    string
	}{
		{"shop_web", "node1", 3, "abc", "shop_web.3.abc"},
		{"shop_agent", "node1", 0, "abc", "shop_agent.node1.abc"}, // global: no slot
	}
	for _, tt := range tests {
		if got := containerName(tt.service, tt.node, tt.slot, tt.task); got != tt.want {
			t.Errorf("containerName(%q, %q, %d, %q) = %q, want %q", tt.service, tt.node, tt.slot, tt.task, got, tt.want)
		}
	}
}

func TestCeilSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 0, time.Nanosecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 10 * time.Second: 10} {
		if got := ceilSeconds(d); got != want {
			t.Errorf("ceilSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}
