package compose

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestUnsupportedKeys checks that each key skiff cannot honour is named,
// with its place, and that the deploy still goes ahead.
func TestUnsupportedKeys(t *testing.T) {
	const file = "testdata/unsupported.yml"
	spec, warnings := mustLoad(t, file)

	type placed struct {
		key  string
		line int
	}
	want := []placed{
		{"configs", 30},
		{"secrets", 33},
		{"services.web.cgroup_parent", 12},
		{"services.web.configs", 9},
		{"services.web.container_name", 11},
		{"services.web.deploy.resources.reservations.generic_resources", 28},
		{"services.web.devices", 7},
		{"services.web.ipc", 18},
		{"services.web.logging", 13},
		{"services.web.network_mode", 6},
		{"services.web.pid", 17},
		{"services.web.ports[].host_ip", 24},
		{"services.web.privileged", 5},
		{"services.web.profiles", 16},
		{"services.web.secrets", 10},
		{"services.web.security_opt", 15},
		{"services.web.userns_mode", 19},
	}
	var got []placed
	for _, w := range warnings {
		got = append(got, placed{w.Key, w.Line})
		if w.File != file {
			t.Errorf("warning %q: file = %q, want %q", w, w.File, file)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("warned keys:\n%v\nwant:\n%v", got, want)
	}

	for _, w := range warnings {
		if w.Key == "services.web.privileged" {
			if want := `service web: ignoring unsupported key "privileged"`; w.Message != want {
				t.Errorf("message = %q, want %q", w.Message, want)
			}
			if want := file + `:5: service web: ignoring unsupported key "privileged"`; w.String() != want {
				t.Errorf("String() = %q, want %q", w.String(), want)
			}
		}
		if w.Key == "secrets" {
			if want := `ignoring unsupported top-level key "secrets"`; w.Message != want {
				t.Errorf("message = %q, want %q", w.Message, want)
			}
		}
	}

	// network_mode is ignored, so the service joins the default network,
	// as under docker stack deploy; profiles are ignored, so it is deployed.
	web := service(t, spec, "web")
	if got := web.Networks[0].Target; got != testStack+"_default" {
		t.Errorf("network = %q, want the default network", got)
	}
}

// TestWarnings covers the warnings that the converter gives for values,
// and the keys that must not warn.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compose string
		want    []string // messages
	}{{
		name: "build with image",
		compose: `services:
  web:
    build: .
    image: skiff-test/web:latest
`,
		want: []string{`service web: ignoring "build": skiff does not build images and runs image skiff-test/web:latest as it is`},
	}, {
		name: "restart with restart_policy",
		compose: `services:
  web:
    image: skiff-test/web:latest
    restart: always
    deploy:
      restart_policy:
        condition: on-failure
`,
		want: []string{`service web: ignoring "restart": deploy.restart_policy is set and takes precedence`},
	}, {
		name: "network driver and name",
		compose: `services:
  web:
    image: skiff-test/web:latest
    networks: [front]
networks:
  front:
    driver: bridge
    name: frontend
    driver_opts:
      com.docker.network.bridge.name: br-front
`,
		want: []string{
			`network front: ignoring driver "bridge": skiff runs every network as an overlay`,
			`network front: ignoring unsupported key "driver_opts"`,
			`network front: ignoring name "frontend": skiff names the network getstartedlab_front`,
		},
	}, {
		name: "several subnets",
		compose: `services:
  web:
    image: skiff-test/web:latest
networks:
  default:
    ipam:
      config:
        - subnet: 10.20.0.0/24
        - subnet: 10.21.0.0/24
`,
		want: []string{"network default: ignoring all ipam.config entries but the first: a skiff network has one subnet"},
	}, {
		name: "tmpfs option",
		compose: `services:
  web:
    image: skiff-test/web:latest
    tmpfs: ["/run:size=64k,noexec"]
`,
		want: []string{`service web: tmpfs /run: ignoring unsupported option "noexec"`},
	}, {
		name: "depends_on restart",
		compose: `services:
  web:
    image: skiff-test/web:latest
    links: [cache]
    depends_on:
      db:
        condition: service_started
        restart: true
  db:
    image: skiff-test/redis:latest
  cache:
    image: skiff-test/redis:latest
`,
		// Not for cache: compose-go sets restart on the dependencies that
		// links imply.
		want: []string{`service web: ignoring unsupported key "depends_on.db.restart"`},
	}, {
		name: "empty command",
		compose: `services:
  web:
    image: skiff-test/web:latest
    command: []
`,
		want: []string{"service web: an empty command cannot clear the image's command in skiff: the image's command runs"},
	}, {
		name: "nested keys",
		compose: `services:
  web:
    image: skiff-test/web:latest
    volumes:
      - type: volume
        source: data
        target: /data
        volume:
          subpath: app
    networks:
      default:
        ipv4_address: 10.0.0.5
volumes:
  data:
`,
		want: []string{
			`service web: ignoring unsupported key "networks.default.ipv4_address"`,
			`service web: ignoring unsupported key "volumes[].volume.subpath"`,
		},
	}, {
		name: "quiet keys",
		compose: `x-defaults: &defaults
  image: skiff-test/web:latest
services:
  web:
    <<: *defaults
    privileged: false
    expose: ["8080"]
    x-owner: team-a
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, warnings, err := loadFiles(t, writeCompose(t, tc.compose))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range warnings {
				got = append(got, w.Message)
				if w.Line == 0 {
					t.Errorf("warning %q has no line", w.Message)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestFindUnmapped checks the walk on a made-up type, as a future
// compose-go might add fields.
func TestFindUnmapped(t *testing.T) {
	type item struct {
		Kept    string `yaml:"kept"`
		Dropped string `yaml:"dropped"`
	}
	type embedded struct {
		Inline string `yaml:"inline_key"`
	}
	type object struct {
		Mapped     string           `yaml:"mapped"`
		NewField   string           `yaml:"new_field"`
		Unset      string           `yaml:"unset"`
		EmptyList  []string         `yaml:"empty_list"`
		Items      []item           `yaml:"items"`
		ByName     map[string]*item `yaml:"by_name"`
		Hidden     string           `yaml:"-"`
		Extensions types.Extensions `yaml:"#extensions,inline"`
		embedded   `yaml:",inline"`
		private    string
	}
	v := object{
		Mapped:     "x",
		NewField:   "x",
		EmptyList:  []string{},
		Items:      []item{{Kept: "x"}, {Kept: "x", Dropped: "x"}},
		ByName:     map[string]*item{"b": {Dropped: "x"}, "a": {Dropped: "x"}},
		Hidden:     "x",
		Extensions: types.Extensions{"x-new": 1},
		embedded:   embedded{Inline: "x"},
		private:    "x",
	}
	mapped := keySet{
		"mapped":  nil,
		"items":   keySet{"kept": nil},
		"by_name": keySet{"kept": nil},
	}
	var got []string
	findUnmapped(reflect.ValueOf(v), mapped, []string{"services", "web"}, func(path []string) {
		got = append(got, renderPath(path))
	})
	want := []string{
		"services.web.new_field",
		"services.web.items[].dropped",
		"services.web.by_name.a.dropped",
		"services.web.by_name.b.dropped",
	}
	// The embedded struct is unexported, so its inline key is not walked:
	// compose-go's embedded specs are exported.
	if !slices.Equal(got, want) {
		t.Errorf("unmapped:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestKeySetsNameRealKeys checks that the key sets list only keys that
// compose-go has, at the place it has them: a misspelt entry would leave
// the real key warned about while the converter maps it.
func TestKeySetsNameRealKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  reflect.Type
		keys keySet
	}{
		{"projectKeys", reflect.TypeFor[types.Project](), projectKeys},
		{"serviceKeys", reflect.TypeFor[types.ServiceConfig](), serviceKeys},
		{"networkKeys", reflect.TypeFor[types.NetworkConfig](), networkKeys},
		{"volumeKeys", reflect.TypeFor[types.VolumeConfig](), volumeKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkKeySet(t, tc.typ, tc.keys, tc.name)
		})
	}
}

func checkKeySet(t *testing.T, typ reflect.Type, keys keySet, where string) {
	fields := yamlFields(typ)
	for key, sub := range keys {
		ft, ok := fields[key]
		if !ok {
			t.Errorf("%s: %s has no key %q", where, typ, key)
			continue
		}
		if sub != nil {
			checkKeySet(t, ft, sub, where+"."+key)
		}
	}
}

// yamlFields maps the YAML keys of a struct type (seen through pointers,
// slices and maps, and with inline structs flattened) to their types.
func yamlFields(typ reflect.Type) map[string]reflect.Type {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	fields := map[string]reflect.Type{}
	if typ.Kind() != reflect.Struct {
		return fields
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, inline := yamlKey(f)
		if inline {
			for k, v := range yamlFields(f.Type) {
				fields[k] = v
			}
			continue
		}
		fields[name] = f.Type
	}
	return fields
}
