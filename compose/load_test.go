package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// plainService is the spec Load makes for a service that sets nothing but
// its image: one replica on the default network, with Swarm's defaults.
func plainService(name, image string) *skiffpb.ServiceSpec {
	update := func() *skiffpb.UpdateConfig {
		return &skiffpb.UpdateConfig{Parallelism: 1, Monitor: int64(DefaultUpdateMonitor)}
	}
	return &skiffpb.ServiceSpec{
		Name:           testStack + "_" + name,
		Stack:          testStack,
		Container:      &skiffpb.ContainerSpec{Image: image},
		Replicas:       1,
		RestartPolicy:  &skiffpb.RestartPolicy{Delay: int64(DefaultRestartDelay)},
		UpdateConfig:   update(),
		RollbackConfig: update(),
		Placement:      &skiffpb.Placement{},
		Reservations:   &skiffpb.Resources{},
		Limits:         &skiffpb.Resources{},
		Endpoint:       &skiffpb.EndpointSpec{},
		Networks:       []*skiffpb.ServiceNetwork{{Target: testStack + "_default"}},
	}
}

// defaultNetworkSpec is the network that services without networks join.
func defaultNetworkSpec() *skiffpb.NetworkSpec {
	return &skiffpb.NetworkSpec{Name: testStack + "_default", Stack: testStack, Driver: "overlay"}
}

// tutorialWeb is the tutorial's web service: port 4000 to 80, linked to
// redis (which compose also makes a start-order dependency).
func tutorialWeb(image string) *skiffpb.ServiceSpec {
	web := plainService("web", image)
	web.Endpoint.Ports = []*skiffpb.PortConfig{{TargetPort: 80, PublishedPort: 4000}}
	web.Links = []*skiffpb.Link{{Service: "redis", Alias: "redis"}}
	web.DependsOn = []*skiffpb.Dependency{{Service: "redis"}}
	return web
}

func TestLoadTutorial(t *testing.T) {
	spec, warnings := mustLoad(t, "testdata/tutorial-part3.yml")
	assertNoWarnings(t, warnings)
	assertProto(t, spec, &skiffpb.StackSpec{
		Name: testStack,
		Services: []*skiffpb.ServiceSpec{
			plainService("redis", "redis"),
			tutorialWeb("username/repo:tag"),
		},
		Networks: []*skiffpb.NetworkSpec{defaultNetworkSpec()},
	})
}

// TestLoadGetStartedLab loads the shape of skiff's example stack.
func TestLoadGetStartedLab(t *testing.T) {
	spec, warnings := mustLoad(t, "testdata/getstartedlab.yml")
	assertNoWarnings(t, warnings)

	web := tutorialWeb("skiff-test/web:latest")
	web.Replicas = 5
	web.Limits = &skiffpb.Resources{NanoCpus: 100_000_000, MemoryBytes: 50 << 20}
	web.RestartPolicy.Condition = skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE
	assertProto(t, spec, &skiffpb.StackSpec{
		Name: testStack,
		Services: []*skiffpb.ServiceSpec{
			plainService("redis", "skiff-test/redis:latest"),
			web,
		},
		Networks: []*skiffpb.NetworkSpec{defaultNetworkSpec()},
	})
}

func TestLoadTutorialPart5(t *testing.T) {
	spec, warnings := mustLoad(t, "testdata/tutorial-part5.yml")
	assertNoWarnings(t, warnings)

	webnet := []*skiffpb.ServiceNetwork{{Target: testStack + "_webnet"}}
	manager := &skiffpb.Placement{Constraints: []string{"node.role == manager"}}

	redis := plainService("redis", "redis")
	redis.Container.Command = []string{"redis-server", "--appendonly", "yes"}
	redis.Container.Mounts = []*skiffpb.Mount{{
		Type:               skiffpb.MountType_MOUNT_TYPE_BIND,
		Source:             "/home/docker/data",
		Target:             "/data",
		BindCreateHostPath: true,
	}}
	redis.Placement = manager
	redis.Endpoint.Ports = []*skiffpb.PortConfig{{TargetPort: 6379, PublishedPort: 6379}}
	redis.Networks = webnet

	visualizer := plainService("visualizer", "dockersamples/visualizer:stable")
	visualizer.Container.Mounts = []*skiffpb.Mount{{
		Type:               skiffpb.MountType_MOUNT_TYPE_BIND,
		Source:             "/var/run/docker.sock",
		Target:             "/var/run/docker.sock",
		BindCreateHostPath: true,
	}}
	visualizer.Placement = manager
	visualizer.Endpoint.Ports = []*skiffpb.PortConfig{{TargetPort: 8080, PublishedPort: 8080}}
	visualizer.Networks = webnet

	web := plainService("web", "username/repo:tag")
	web.Replicas = 5
	web.Limits = &skiffpb.Resources{NanoCpus: 100_000_000, MemoryBytes: 50 << 20}
	web.RestartPolicy.Condition = skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE
	web.Endpoint.Ports = []*skiffpb.PortConfig{{TargetPort: 80, PublishedPort: 80}}
	web.Networks = webnet

	assertProto(t, spec, &skiffpb.StackSpec{
		Name:     testStack,
		Services: []*skiffpb.ServiceSpec{redis, visualizer, web},
		// No service is left on the default network, so there is none.
		Networks: []*skiffpb.NetworkSpec{{Name: testStack + "_webnet", Stack: testStack, Driver: "overlay"}},
	})
}

// TestLoadComposeVersions loads the same stack written for each format.
func TestLoadComposeVersions(t *testing.T) {
	want := &skiffpb.StackSpec{
		Name: testStack,
		Services: []*skiffpb.ServiceSpec{
			plainService("redis", "skiff-test/redis:latest"),
			tutorialWeb("skiff-test/web:latest"),
		},
		Networks: []*skiffpb.NetworkSpec{defaultNetworkSpec()},
	}
	for _, file := range []string{"version-2.yml", "version-2.4.yml", "version-3.yml", "version-3.8.yml", "unversioned.yml"} {
		t.Run(file, func(t *testing.T) {
			spec, warnings := mustLoad(t, filepath.Join("testdata", file))
			assertNoWarnings(t, warnings)
			assertProto(t, spec, want)
		})
	}
}

func TestLoadInterpolation(t *testing.T) {
	for _, tc := range []struct {
		name          string
		environ       []string
		wantEnv       []string
		wantPublished uint32
	}{{
		name: "dotenv only",
		wantEnv: []string{
			"EXTRA=from-env-file",    // env_file
			"FROM_SHELL=from-dotenv", // ${FROM_SHELL} from .env
			"LITERAL=$HOME",          // $$ escapes
			"NAME=world",             // ${NAME:-world}; environment wins over env_file
			"PASSED=from-dotenv",     // a bare key takes the interpolation environment's value
		},
		wantPublished: 4000,
	}, {
		name:    "environment wins over dotenv",
		environ: []string{"FROM_SHELL=from-shell", "NAME=skiff", "PORT=5000", "NOT_SET=now-set"},
		wantEnv: []string{
			"EXTRA=from-env-file",
			"FROM_SHELL=from-shell",
			"LITERAL=$HOME",
			"NAME=skiff",
			"NOT_SET=now-set",
			"PASSED=from-dotenv",
		},
		wantPublished: 5000,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			spec, warnings, err := Load(context.Background(), Options{
				Files:     []string{"testdata/interpolation/docker-compose.yml"},
				Environ:   tc.environ,
				StackName: testStack,
			})
			if err != nil {
				t.Fatal(err)
			}
			web := service(t, spec, "web")
			if got := web.Container.Image; got != "skiff-test/web:v1" {
				t.Errorf("image = %q, want the tag from .env", got)
			}
			if !slices.Equal(web.Container.Env, tc.wantEnv) {
				t.Errorf("env = %q, want %q", web.Container.Env, tc.wantEnv)
			}
			if web.Replicas != 3 {
				t.Errorf("replicas = %d, want 3 from .env", web.Replicas)
			}
			if got := web.Endpoint.Ports[0].PublishedPort; got != tc.wantPublished {
				t.Errorf("published port = %d, want %d", got, tc.wantPublished)
			}
			want := []Warning{{Message: `variable "MISSING" is not set: substituting an empty string`}}
			if !slices.Equal(warnings, want) {
				t.Errorf("warnings = %v, want %v", warnings, want)
			}
		})
	}
}

func TestLoadV2Fallbacks(t *testing.T) {
	spec, warnings := mustLoad(t, "testdata/v2-fallbacks.yml")
	assertNoWarnings(t, warnings)

	want := plainService("web", "skiff-test/web:latest")
	want.Replicas = 3
	want.RestartPolicy = &skiffpb.RestartPolicy{
		Condition:   skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE,
		Delay:       int64(DefaultRestartDelay),
		MaxAttempts: 4,
	}
	want.Limits = &skiffpb.Resources{NanoCpus: 500_000_000, MemoryBytes: 64 << 20}
	want.Reservations = &skiffpb.Resources{MemoryBytes: 32 << 20}
	want.Container.PidsLimit = 100
	assertProto(t, service(t, spec, "web"), want)
}

// TestLoadMultipleFiles checks that a later file overrides an earlier one,
// and that a warning names the file its key is in.
func TestLoadMultipleFiles(t *testing.T) {
	spec, warnings := mustLoad(t, "testdata/override/docker-compose.yml", "testdata/override/docker-compose.prod.yml")

	want := plainService("web", "skiff-test/web:v2")
	want.Replicas = 6
	want.Labels = map[string]string{"env": "prod"}
	want.Endpoint.Ports = []*skiffpb.PortConfig{{TargetPort: 80, PublishedPort: 4000}}
	assertProto(t, service(t, spec, "web"), want)

	wantWarnings := []Warning{{
		File:    "testdata/override/docker-compose.prod.yml",
		Line:    5,
		Key:     "services.web.privileged",
		Message: `service web: ignoring unsupported key "privileged"`,
	}}
	if !slices.Equal(warnings, wantWarnings) {
		t.Errorf("warnings = %v, want %v", warnings, wantWarnings)
	}
}

// TestLoadWorkingDir checks that relative paths and .env are taken from
// WorkingDir rather than from the file's directory.
func TestLoadWorkingDir(t *testing.T) {
	file := writeCompose(t, `
services:
  web:
    image: skiff-test/web:${TAG}
    volumes:
      - ./data:/data
`)
	wd := t.TempDir()
	if err := os.WriteFile(filepath.Join(wd, ".env"), []byte("TAG=from-workdir\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, warnings, err := Load(context.Background(), Options{Files: []string{file}, WorkingDir: wd, StackName: testStack})
	if err != nil {
		t.Fatal(err)
	}
	assertNoWarnings(t, warnings)
	web := service(t, spec, "web")
	if got := web.Container.Image; got != "skiff-test/web:from-workdir" {
		t.Errorf("image = %q, want the tag from WorkingDir/.env", got)
	}
	if got, want := web.Container.Mounts[0].Source, filepath.Join(wd, "data"); got != want {
		t.Errorf("bind source = %q, want %q", got, want)
	}
}

func TestLoadOptionErrors(t *testing.T) {
	valid := "testdata/getstartedlab.yml"
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no file", Options{StackName: testStack}, "no compose file given: name one with -c FILE"},
		{"no stack name", Options{Files: []string{valid}}, "no stack name given"},
		{"invalid stack name", Options{Files: []string{valid}, StackName: "Get Started"}, `invalid stack name "Get Started"`},
		{"missing file", Options{Files: []string{"testdata/nonexistent.yml"}, StackName: testStack}, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Load(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestLoadEveryMappedKey loads a file that sets every key skiff maps and
// compares the spec with testdata/full/want.txtpb, where each value can be
// traced back to the file.
func TestLoadEveryMappedKey(t *testing.T) {
	spec, warnings := mustLoad(t, "testdata/full/docker-compose.yml")
	assertNoWarnings(t, warnings)

	golden, err := os.ReadFile("testdata/full/want.txtpb")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs("testdata/full")
	if err != nil {
		t.Fatal(err)
	}
	// Bind mounts are made absolute, so the golden file cannot hold them.
	golden = []byte(strings.ReplaceAll(string(golden), "$FIXTURE_DIR", dir))
	want := &skiffpb.StackSpec{}
	if err := prototext.Unmarshal(golden, want); err != nil {
		t.Fatal(err)
	}
	assertProto(t, spec, want)
}

// TestLoadDeterministic loads the same files repeatedly: compose-go holds
// much in maps, whose order Go randomises.
func TestLoadDeterministic(t *testing.T) {
	files := []string{"testdata/full/docker-compose.yml", "testdata/unsupported.yml"}
	for _, file := range files {
		first, firstWarnings := mustLoad(t, file)
		for range 10 {
			spec, warnings := mustLoad(t, file)
			if !proto.Equal(spec, first) || !slices.Equal(warnings, firstWarnings) {
				t.Fatalf("%s: two loads differ", file)
			}
		}
	}
}
