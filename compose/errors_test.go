package compose

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidFiles checks that compose-go's errors reach the user with the
// key and the place of the mistake.
func TestInvalidFiles(t *testing.T) {
	for _, tc := range []struct {
		file     string
		wantLine int
		wantKey  string
		wantMsg  []string
	}{{
		// yaml v4's parser numbers this line 3; skiff shows the real one.
		file:     "malformed-yaml.yml",
		wantLine: 4,
		wantMsg:  []string{"invalid YAML at column 4: did not find expected key", "block mapping that starts at line 2"},
	}, {
		file:     "wrong-type.yml",
		wantLine: 5,
		wantKey:  "services.web.deploy.replicas",
		wantMsg:  []string{"services.web.deploy.replicas", `parsing "lots"`},
	}, {
		file:     "wrong-shape.yml",
		wantLine: 4,
		wantKey:  "services.web.ports",
		wantMsg:  []string{"services.web.ports must be a array"},
	}, {
		file:     "unknown-key.yml",
		wantLine: 5,
		wantKey:  "services.web.deploy.replica",
		wantMsg:  []string{"additional properties 'replica' not allowed"},
	}, {
		file:     "bad-duration.yml",
		wantLine: 6,
		wantKey:  "services.web.healthcheck.interval",
		wantMsg:  []string{"services[web].healthcheck.interval", `invalid duration "soon"`},
	}} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			_, _, err := loadFiles(t, path)
			fe := assertFileError(t, err, path, tc.wantLine, tc.wantKey)
			if fe != nil && errors.Unwrap(fe) == nil {
				t.Error("the error does not wrap compose-go's")
			}
			if !strings.HasPrefix(err.Error(), "invalid compose file: ") {
				t.Errorf("error %q does not say the file is invalid", err)
			}
			for _, want := range tc.wantMsg {
				if fe != nil && !strings.Contains(fe.Error(), want) {
					t.Errorf("error %q does not contain %q", fe, want)
				}
			}
		})
	}
}

// TestInvalidFilesInline covers compose-go errors whose key skiff has to
// find itself.
func TestInvalidFilesInline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		compose  string
		wantLine int
		wantKey  string
		wantMsg  string
	}{{
		name: "misspelled service key",
		compose: `services:
  web:
    image: skiff-test/web:latest
    imag: skiff-test/web:latest
`,
		wantLine: 4,
		wantKey:  "services.web.imag",
		wantMsg:  `services.web.imag: unknown key "imag": check its spelling and indentation`,
	}, {
		name: "misspelled top-level key",
		compose: `servics:
  web:
    image: skiff-test/web:latest
`,
		wantLine: 1,
		wantKey:  "servics",
		wantMsg:  "additional properties 'servics' not allowed",
	}, {
		name: "bad short port",
		compose: `services:
  web:
    image: skiff-test/web:latest
    ports:
      - "4000:80"
      - "abc:80"
`,
		wantLine: 6,
		wantKey:  "services.web.ports.1",
		wantMsg:  "services.web.ports: Invalid hostPort: abc",
	}, {
		name: "undefined network",
		compose: `services:
  web:
    image: skiff-test/web:latest
    networks: [front]
`,
		wantLine: 4,
		wantKey:  "services.web.networks.front",
		wantMsg:  `service "web" refers to undefined network front`,
	}, {
		name: "undefined dependency",
		compose: `services:
  web:
    image: skiff-test/web:latest
    depends_on:
      - db
`,
		wantLine: 5,
		wantKey:  "services.web.depends_on.db",
		wantMsg:  `service "web" depends on undefined service "db"`,
	}, {
		name: "required variable",
		compose: `services:
  web:
    image: skiff-test/web:latest
    environment:
      TOKEN: ${TOKEN:?set TOKEN to the API token}
`,
		wantLine: 5,
		wantKey:  "services.web.environment.TOKEN",
		wantMsg:  "set TOKEN to the API token",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeCompose(t, tc.compose)
			_, _, err := loadFiles(t, path)
			fe := assertFileError(t, err, path, tc.wantLine, tc.wantKey)
			if fe != nil && !strings.Contains(fe.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", fe, tc.wantMsg)
			}
		})
	}
}

// TestUndeployable checks the files that are valid compose but that skiff
// cannot run as written.
func TestUndeployable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		compose  string
		wantLine int
		wantKey  string
		wantMsg  string
	}{{
		name: "build without image",
		compose: `services:
  web:
    build: ./web
`,
		wantLine: 3,
		wantKey:  "services.web.build",
		wantMsg:  "service web: build is not supported by skiff; build the image and set image:",
	}, {
		name: "replicas of a global service",
		compose: `services:
  agent:
    image: skiff-test/web:latest
    deploy:
      mode: global
      replicas: 2
`,
		wantLine: 6,
		wantKey:  "services.agent.deploy.replicas",
		wantMsg:  "service agent: a global service runs one task on every node and cannot set replicas",
	}, {
		name: "scale of a global service",
		compose: `services:
  agent:
    image: skiff-test/web:latest
    scale: 2
    deploy:
      mode: global
`,
		wantLine: 4,
		wantKey:  "services.agent.scale",
		wantMsg:  "cannot set replicas: remove scale",
	}, {
		name: "max replicas per node of a global service",
		compose: `services:
  agent:
    image: skiff-test/web:latest
    deploy:
      mode: global
      placement:
        max_replicas_per_node: 1
`,
		wantLine: 7,
		wantKey:  "services.agent.deploy.placement.max_replicas_per_node",
		wantMsg:  "a global service runs one task per node already: remove max_replicas_per_node",
	}, {
		name: "placement preference without spread",
		compose: `services:
  web:
    image: skiff-test/web:latest
    deploy:
      placement:
        preferences:
          - {}
`,
		wantLine: 7,
		wantKey:  "services.web.deploy.placement.preferences.0",
		wantMsg:  "a placement preference needs spread:",
	}, {
		name: "published port out of range",
		compose: `services:
  web:
    image: skiff-test/web:latest
    ports:
      - target: 80
        published: "70000"
`,
		wantLine: 6,
		wantMsg:  `port 80: published port "70000" is not a port number (1-65535)`,
	}, {
		name: "job mode",
		compose: `services:
  migrate:
    image: skiff-test/web:latest
    deploy:
      mode: replicated-job
`,
		wantLine: 5,
		wantKey:  "services.migrate.deploy.mode",
		wantMsg:  `deploy.mode "replicated-job" is not supported: skiff runs services, not jobs`,
	}, {
		name: "unknown mode",
		compose: `services:
  web:
    image: skiff-test/web:latest
    deploy:
      mode: everywhere
`,
		wantLine: 5,
		wantMsg:  `deploy.mode "everywhere" is not valid: use replicated or global`,
	}, {
		name: "external network",
		compose: `services:
  web:
    image: skiff-test/web:latest
    networks: [proxy]
networks:
  proxy:
    external: true
`,
		wantLine: 7,
		wantKey:  "networks.proxy.external",
		wantMsg:  "network proxy: external networks are not supported",
	}, {
		name: "restart policy",
		compose: `services:
  web:
    image: skiff-test/web:latest
    restart: sometimes
`,
		wantLine: 4,
		wantKey:  "services.web.restart",
		wantMsg:  `restart "sometimes" is not valid: use no, always, unless-stopped, on-failure or on-failure:N`,
	}, {
		name: "restart policy condition",
		compose: `services:
  web:
    image: skiff-test/web:latest
    deploy:
      restart_policy:
        condition: on_failure
`,
		wantLine: 6,
		wantMsg:  `restart_policy condition "on_failure" is not valid: use none, on-failure or any`,
	}, {
		name: "update failure action",
		compose: `services:
  web:
    image: skiff-test/web:latest
    deploy:
      update_config:
        failure_action: retry
`,
		wantLine: 6,
		wantMsg:  `failure_action "retry" is not valid: use pause, continue or rollback`,
	}, {
		name: "rollback of a rollback",
		compose: `services:
  web:
    image: skiff-test/web:latest
    deploy:
      rollback_config:
        failure_action: rollback
`,
		wantLine: 6,
		wantMsg:  "a rollback can only pause or continue",
	}, {
		name: "endpoint mode",
		compose: `services:
  web:
    image: skiff-test/web:latest
    deploy:
      endpoint_mode: nat
`,
		wantLine: 5,
		wantMsg:  `endpoint_mode "nat" is not valid: use vip or dnsrr`,
	}, {
		name: "dnsrr with an ingress port",
		compose: `services:
  web:
    image: skiff-test/web:latest
    ports: ["4000:80"]
    deploy:
      endpoint_mode: dnsrr
`,
		wantLine: 4,
		wantMsg:  "port 80 is published in ingress mode, which endpoint_mode dnsrr cannot serve",
	}, {
		name: "published range for one target",
		compose: `services:
  web:
    image: skiff-test/web:latest
    ports:
      - target: 80
        published: "8000-8002"
`,
		wantLine: 6,
		wantMsg:  "published port range 8000-8002 is not supported for a single target port",
	}, {
		name: "sctp",
		compose: `services:
  web:
    image: skiff-test/web:latest
    ports:
      - target: 80
        published: "8000"
        protocol: sctp
`,
		wantLine: 7,
		wantMsg:  `port 80: protocol "sctp" is not supported: use tcp or udp`,
	}, {
		name: "port published twice",
		compose: `services:
  api:
    image: skiff-test/web:latest
    ports: ["4000:80"]
  web:
    image: skiff-test/web:latest
    ports: ["4000:8080"]
`,
		wantLine: 7,
		wantKey:  "services.web.ports",
		wantMsg:  "service web: published port 4000/tcp is also published by service api",
	}, {
		name: "host port within one service",
		compose: `services:
  web:
    image: skiff-test/web:latest
    ports:
      - {target: 80, published: "4000", mode: host}
      - {target: 81, published: "4000", mode: host}
`,
		wantLine: 4,
		wantMsg:  "published port 4000/tcp is published twice by this service",
	}, {
		name: "unsupported volume type",
		compose: `services:
  web:
    image: skiff-test/web:latest
    volumes:
      - type: npipe
        source: //./pipe/docker_engine
        target: //./pipe/docker_engine
`,
		wantLine: 5,
		wantMsg:  `type "npipe" is not supported: use a bind mount, a named volume or tmpfs`,
	}, {
		name: "subnet",
		compose: `services:
  web:
    image: skiff-test/web:latest
networks:
  default:
    ipam:
      config:
        - subnet: 10.20.0.1/24
`,
		wantLine: 8,
		wantMsg:  `subnet "10.20.0.1/24" is not a network in CIDR form`,
	}, {
		name: "service name too long",
		compose: `services:
  a-service-whose-name-is-far-too-long-to-be-a-dns-label-of-its-own:
    image: skiff-test/web:latest
`,
		wantLine: 2,
		wantMsg:  "is longer than 63 characters",
	}, {
		name: "service name with a dot",
		compose: `services:
  web.v2:
    image: skiff-test/web:latest
`,
		wantLine: 2,
		wantMsg:  `service name "getstartedlab_web.v2" is not valid`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeCompose(t, tc.compose)
			_, _, err := loadFiles(t, path)
			fe := assertFileError(t, err, "", tc.wantLine, tc.wantKey)
			if !strings.HasPrefix(err.Error(), `cannot deploy stack "getstartedlab": `) {
				t.Errorf("error %q does not say the stack cannot be deployed", err)
			}
			if fe != nil && !strings.Contains(fe.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", fe, tc.wantMsg)
			}
		})
	}
}

// TestUndeployableListsEveryProblem checks that one load reports all the
// problems, each in its place.
func TestUndeployableListsEveryProblem(t *testing.T) {
	path := writeCompose(t, `services:
  web:
    build: .
  agent:
    image: skiff-test/web:latest
    deploy:
      mode: global
      replicas: 3
`)
	_, _, err := loadFiles(t, path)
	if err == nil {
		t.Fatal("Load() succeeded, want an error")
	}
	want := `cannot deploy stack "getstartedlab": ` +
		path + `:8: service agent: a global service runs one task on every node and cannot set replicas: remove replicas or use deploy.mode: replicated` + "\n" +
		path + `:3: service web: build is not supported by skiff; build the image and set image:`
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
}

// TestPublishedPortsThatMayRepeat checks the port uses that do not
// conflict.
func TestPublishedPortsThatMayRepeat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compose string
	}{{
		name: "host ports of different services",
		compose: `services:
  a:
    image: skiff-test/web:latest
    ports: [{target: 80, published: "4000", mode: host}]
  b:
    image: skiff-test/web:latest
    ports: [{target: 80, published: "4000", mode: host}]
`,
	}, {
		name: "one port number for tcp and udp",
		compose: `services:
  dns:
    image: skiff-test/web:latest
    ports: ["53:53/tcp", "53:53/udp"]
`,
	}, {
		name: "unpublished ports",
		compose: `services:
  a:
    image: skiff-test/web:latest
    ports: ["80"]
  b:
    image: skiff-test/web:latest
    ports: ["80"]
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := loadFiles(t, writeCompose(t, tc.compose)); err != nil {
				t.Errorf("Load(): %v", err)
			}
		})
	}
}

// assertFileError checks that err holds a single *FileError placed as
// wanted, and returns it. An empty wantFile or wantKey is not checked.
func assertFileError(t *testing.T, err error, wantFile string, wantLine int, wantKey string) *FileError {
	t.Helper()
	if err == nil {
		t.Fatal("Load() succeeded, want an error")
	}
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("error %q holds no *FileError", err)
	}
	if wantFile != "" && fe.File != wantFile {
		t.Errorf("error file = %q, want %q (error: %s)", fe.File, wantFile, err)
	}
	if fe.Line != wantLine {
		t.Errorf("error line = %d, want %d (error: %s)", fe.Line, wantLine, err)
	}
	if wantKey != "" && fe.Key != wantKey {
		t.Errorf("error key = %q, want %q (error: %s)", fe.Key, wantKey, err)
	}
	return fe
}
