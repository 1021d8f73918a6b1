// The tests of the systemd units beside them: systemd-analyze verify
// accepts them as deploy/install installs them, deploy/testbed runs exactly
// their command lines with the settings it always gave its daemons, and the
// example environment files name every flag of the daemons and nothing else.
package systemd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The units' own paths, which deploy/install rewrites to its PREFIX and
// SYSCONFDIR, and deploy/testbed maps to its BIN_DIR.
const (
	unitBinDir  = "/usr/local/bin"
	unitConfDir = "/etc/skiff"
)

var daemons = []string{"manager", "agent"}

// repo is the repository's root, seen from this package's directory, where
// go test runs.
const repo = "../.."

// unit is a unit file's settings: each key's values in order, whatever the
// section, which is enough for keys that appear in one section only.
type unit map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		u[k] = append(u[k], v)
	}
	return u
}

// one is the single value of key, failing when there is not exactly one.
func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s= has %d values %q, want one", key, len(u[key]), u[key])
	}
	return u[key][0]
}

func (u unit) words(key string) []string {
	var out []string
	for _, v := range u[key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

func unitPath(daemon string) string { return "skiff-" + daemon + ".service" }

// TestUnits checks what the install guide and the testbed rely on: the
// command line is the bare binary, every setting comes from one
// environment file, and the data dir the example names is the one the unit
// creates and the CLI looks in.
func TestUnits(t *testing.T) {
	for _, d := range daemons {
		t.Run(d, func(t *testing.T) {
			u := readUnit(t, unitPath(d))
			if got, want := u.one(t, "ExecStart"), unitBinDir+"/skiff-"+d; got != want {
				t.Errorf("ExecStart=%s, want %s: settings belong in the environment file", got, want)
			}
			if got, want := u.one(t, "EnvironmentFile"), unitConfDir+"/"+d+".env"; got != want {
				t.Errorf("EnvironmentFile=%s, want %s", got, want)
			}
			if len(u["Environment"]) > 0 {
				t.Errorf("Environment=%q: the testbed reproduces the environment file only", u["Environment"])
			}
			if got := u.one(t, "Restart"); got != "on-failure" {
				t.Errorf("Restart=%s, want on-failure", got)
			}
			if got, want := u.one(t, "StateDirectory"), "skiff/"+d; got != want {
				t.Errorf("StateDirectory=%s, want %s", got, want)
			}
			env := exampleVars(t, d+".env.example")
			if got, want := env["SKIFF_DATA_DIR"], "/var/lib/skiff/"+d; got != want {
				t.Errorf("%s.env.example sets SKIFF_DATA_DIR=%q, want %q, the unit's StateDirectory", d, got, want)
			}
			wants := []string{"network-online.target"}
			if d == "agent" {
				wants = append(wants, "docker.service")
				// dockerd bind-mounts files the agent writes (a task's
				// resolv.conf) into tasks that may run as any user.
				if len(u["UMask"]) > 0 {
					t.Errorf("UMask=%s: the files the agent writes for tasks must stay readable by their users", u["UMask"])
				}
			}
			for _, w := range wants {
				if !slices.Contains(u.words("After"), w) || !slices.Contains(u.words("Wants"), w) {
					t.Errorf("After= %q and Wants= %q should both name %s", u.words("After"), u.words("Wants"), w)
				}
			}
		})
	}
}

// exampleVars returns the variables an example environment file sets,
// failing on any line systemd would read differently from how it looks.
func exampleVars(t *testing.T, path string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, line := range exampleLines(t, path) {
		if line == "" || line[0] == '#' {
			continue
		}
		m := plainAssignment.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: %q is not a plain VAR=value line", path, line)
		}
		vars[m[1]] = m[2]
	}
	return vars
}

func exampleLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

var (
	// plainAssignment is a line that means the same to systemd and to a
	// reader: no quotes, escapes, spaces or trailing comments.
	plainAssignment = regexp.MustCompile(`^(SKIFF_[A-Z0-9_]+)=([A-Za-z0-9_.,:/@=+-]*)$`)
	// documented is a variable an example sets or shows commented out.
	documented = regexp.MustCompile(`(?m)^#?(SKIFF_[A-Z0-9_]+)=`)
	// helpFlag is a flag in cobra's --help.
	helpFlag = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)\b`)
)

// TestEnvExamples checks that each example environment file shows every
// flag of its daemon, as its variable, and no variable the daemon does not
// read; a commented line, once uncommented, must be a plain assignment.
func TestEnvExamples(t *testing.T) {
	bin := buildBinaries(t)
	for _, d := range daemons {
		t.Run(d, func(t *testing.T) {
			help, err := exec.Command(filepath.Join(bin, "skiff-"+d), "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("skiff-%s --help: %v\n%s", d, err, help)
			}
			flags := map[string]bool{}
			for _, m := range helpFlag.FindAllStringSubmatch(string(help), -1) {
				if m[1] != "help" && m[1] != "version" {
					flags["SKIFF_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
				}
			}
			if len(flags) == 0 {
				t.Fatalf("found no flags in skiff-%s --help:\n%s", d, help)
			}
			path := d + ".env.example"
			shown := map[string]bool{}
			for _, m := range documented.FindAllStringSubmatch(strings.Join(exampleLines(t, path), "\n"), -1) {
				shown[m[1]] = true
				if !flags[m[1]] {
					t.Errorf("%s shows %s, but skiff-%s has no flag for it", path, m[1], d)
				}
			}
			for f := range flags {
				if !shown[f] {
					t.Errorf("%s does not show %s, the variable of a flag of skiff-%s: document it", path, f, d)
				}
			}
			for _, line := range exampleLines(t, path) {
				if documented.MatchString(line) && !plainAssignment.MatchString(strings.TrimPrefix(line, "#")) {
					t.Errorf("%s: %q, uncommented, would not be a plain VAR=value line", path, line)
				}
			}
		})
	}
}

// TestTestbedRunsTheUnits runs deploy/testbed's start_manager and
// start_agent with spawn replaced by a recorder, its state dir and token
// files moved to a temporary dir, and so without root or a testbed. Each
// daemon must be started as its unit's ExecStart=, with the environment
// file the testbed wrote loaded, and that file must say what the testbed's
// flags always said (docs/testbed.md, "The daemons").
func TestTestbedRunsTheUnits(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash: deploy/testbed is a bash script")
	}
	const (
		managerToken = "SKFTKN-1-digest-managersecret"
		workerToken  = "SKFTKN-1-digest-workersecret"
	)
	type start struct {
		name             string
		daemon, host     string
		hosts, managers  int
		resuming, tokens bool
		certExpiry       string
		want             func(work string) []string
	}
	starts := []start{{
		name: "first manager", daemon: "manager", host: "h1", hosts: 3, managers: 3, certExpiry: "1m",
		want: func(w string) []string {
			return []string{"SKIFF_NAME=h1", "SKIFF_DATA_DIR=" + w + "/h1/manager", "SKIFF_ADVERTISE_ADDR=198.18.0.1",
				"SKIFF_DEFAULT_ADDR_POOL=198.19.0.0/16", "SKIFF_METRICS_ADDR=198.18.0.1:9090", "SKIFF_CERT_EXPIRY=1m"}
		},
	}, {
		name: "joining manager", daemon: "manager", host: "h2", hosts: 3, managers: 3, tokens: true,
		want: func(w string) []string {
			return []string{"SKIFF_NAME=h2", "SKIFF_DATA_DIR=" + w + "/h2/manager", "SKIFF_ADVERTISE_ADDR=198.18.0.2",
				"SKIFF_DEFAULT_ADDR_POOL=198.19.0.0/16", "SKIFF_METRICS_ADDR=198.18.0.2:9090",
				"SKIFF_JOIN=198.18.0.1:7947", "SKIFF_TOKEN=" + managerToken}
		},
	}, {
		name: "resuming manager", daemon: "manager", host: "h1", hosts: 3, managers: 3, resuming: true, tokens: true,
		want: func(w string) []string {
			return []string{"SKIFF_NAME=h1", "SKIFF_DATA_DIR=" + w + "/h1/manager", "SKIFF_ADVERTISE_ADDR=198.18.0.1",
				"SKIFF_DEFAULT_ADDR_POOL=198.19.0.0/16", "SKIFF_METRICS_ADDR=198.18.0.1:9090",
				"SKIFF_JOIN=198.18.0.2:7947,198.18.0.3:7947", "SKIFF_TOKEN=" + managerToken}
		},
	}, {
		name: "resuming only manager", daemon: "manager", host: "h1", hosts: 3, managers: 1, resuming: true,
		want: func(w string) []string {
			return []string{"SKIFF_NAME=h1", "SKIFF_DATA_DIR=" + w + "/h1/manager", "SKIFF_ADVERTISE_ADDR=198.18.0.1",
				"SKIFF_DEFAULT_ADDR_POOL=198.19.0.0/16", "SKIFF_METRICS_ADDR=198.18.0.1:9090",
				"SKIFF_JOIN=198.18.0.2:7946,198.18.0.3:7946"}
		},
	}, {
		name: "agent", daemon: "agent", host: "h2", hosts: 3, managers: 3, tokens: true,
		want: func(w string) []string {
			return []string{"SKIFF_NAME=h2", "SKIFF_DATA_DIR=" + w + "/h2/agent", "SKIFF_ADVERTISE_ADDR=198.18.0.2",
				"SKIFF_JOIN=198.18.0.1:7947,198.18.0.2:7947,198.18.0.3:7947",
				"SKIFF_DOCKER_HOST=unix://" + w + "/h2/docker.sock", "SKIFF_METRICS_ADDR=198.18.0.2:9091",
				"SKIFF_TOKEN=" + workerToken}
		},
	}, {
		name: "agent before the tokens", daemon: "agent", host: "h1", hosts: 1, managers: 1,
		want: func(w string) []string {
			return []string{"SKIFF_NAME=h1", "SKIFF_DATA_DIR=" + w + "/h1/agent", "SKIFF_ADVERTISE_ADDR=198.18.0.1",
				"SKIFF_JOIN=198.18.0.1:7947", "SKIFF_DOCKER_HOST=unix://" + w + "/h1/docker.sock",
				"SKIFF_METRICS_ADDR=198.18.0.1:9091"}
		},
	}}
	// The harness sources the testbed (its main only prints the usage for
	// "help"), then overrides where it keeps state and how it starts a
	// daemon: spawn's arguments come out NUL-separated.
	const harness = `
source "$TESTBED" help >/dev/null
host_dir() { echo "$WORK/$1"; }
token_file() { echo "$WORK/$1.token"; }
spawn() { printf '%s\0' "$@"; }
HOSTS=$TB_HOSTS
MANAGERS=$TB_MANAGERS
"start_$TB_DAEMON" "$TB_HOST"
`
	testbed, err := filepath.Abs(filepath.Join(repo, "deploy", "testbed"))
	if err != nil {
		t.Fatal(err)
	}
	const binDir = "/testbed/bin"
	for _, s := range starts {
		t.Run(s.name, func(t *testing.T) {
			work := t.TempDir()
			for i := 1; i <= s.hosts; i++ {
				for _, d := range []string{"manager", "agent"} {
					if err := os.MkdirAll(fmt.Sprintf("%s/h%d/%s", work, i, d), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			if s.resuming {
				if err := os.WriteFile(filepath.Join(work, s.host, "manager", "raft.db"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if s.tokens {
				for role, tok := range map[string]string{"manager": managerToken, "worker": workerToken} {
					if err := os.WriteFile(filepath.Join(work, role+".token"), []byte(tok+"\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			cmd := exec.Command("bash", "-c", harness)
			cmd.Env = []string{
				"PATH=" + os.Getenv("PATH"), "TESTBED=" + testbed, "WORK=" + work,
				"TB_HOSTS=" + fmt.Sprint(s.hosts), "TB_MANAGERS=" + fmt.Sprint(s.managers),
				"TB_DAEMON=" + s.daemon, "TB_HOST=" + s.host, "SKIFF_BIN_DIR=" + binDir,
				// A developer's own settings, which must not reach the daemon.
				"SKIFF_ADVERTISE_ADDR=10.9.9.9", "SKIFF_LOG_LEVEL=debug", "DOCKER_HOST=tcp://10.9.9.9:2375",
			}
			if s.certExpiry != "" {
				cmd.Env = append(cmd.Env, "SKIFF_TESTBED_CERT_EXPIRY="+s.certExpiry)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("start_%s %s: %v\n%s", s.daemon, s.host, err, stderr.String())
			}
			args := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
			if len(args) < 3 || args[0] != s.host || args[1] != s.daemon || args[2] != "env" {
				t.Fatalf("spawn %q, want %s %s env …", args, s.host, s.daemon)
			}
			args = args[3:]

			var unset []string
			for len(args) >= 2 && args[0] == "-u" {
				unset = append(unset, args[1])
				args = args[2:]
			}
			for _, v := range cmd.Env {
				name, _, _ := strings.Cut(v, "=")
				if (strings.HasPrefix(name, "SKIFF_") || name == "DOCKER_HOST") && !slices.Contains(unset, name) {
					t.Errorf("%s reaches the daemon: env unsets only %q", name, unset)
				}
			}

			u := readUnit(t, unitPath(s.daemon))
			want := strings.Fields(u.one(t, "ExecStart"))
			want[0] = binDir + strings.TrimPrefix(want[0], unitBinDir)
			if len(args) < len(want) || !slices.Equal(args[len(args)-len(want):], want) {
				t.Fatalf("the daemon runs %q, want the unit's ExecStart= %q", args, want)
			}
			assigns := args[:len(args)-len(want)]

			file := filepath.Join(work, s.host, s.daemon+".env")
			lines := exampleLines(t, file)
			if !slices.Equal(assigns, lines) {
				t.Errorf("env sets %q, want the environment file's %q", assigns, lines)
			}
			if w := s.want(work); !slices.Equal(lines, w) {
				t.Errorf("%s holds\n%s\nwant\n%s", file, strings.Join(lines, "\n"), strings.Join(w, "\n"))
			}
			if fi, err := os.Stat(file); err != nil {
				t.Error(err)
			} else if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600: it may hold a join token", file, fi.Mode().Perm())
			}
		})
	}
}

// TestInstall runs deploy/install into staging dirs: it puts the binaries,
// the units and the environment files in place, keeps an environment file
// that exists, and installs units that run what it installed. Where
// systemd-analyze is on PATH, those units must pass `systemd-analyze
// verify`; it checks that ExecStart= names an executable, so the units are
// verified as installed with PREFIX in a temporary dir, not as they are in
// this directory (where /usr/local/bin/skiff-manager need not exist).
func TestInstall(t *testing.T) {
	bin := buildBinaries(t)
	install, err := filepath.Abs(filepath.Join(repo, "deploy", "install"))
	if err != nil {
		t.Fatal(err)
	}
	run := func(env ...string) (string, error) {
		cmd := exec.Command(install)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SKIFF_BIN_DIR=" + bin}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	t.Run("staged", func(t *testing.T) {
		dest := t.TempDir()
		if out, err := run("DESTDIR=" + dest); err != nil {
			t.Fatalf("deploy/install: %v\n%s", err, out)
		}
		for _, b := range []string{"skiff", "skiff-manager", "skiff-agent"} {
			sameFile(t, filepath.Join(dest, "usr/local/bin", b), filepath.Join(bin, b), 0o755)
		}
		for _, d := range daemons {
			sameFile(t, filepath.Join(dest, "etc/systemd/system", unitPath(d)), unitPath(d), 0o644)
			sameFile(t, filepath.Join(dest, "etc/skiff", d+".env"), d+".env.example", 0o600)
		}
		mine := filepath.Join(dest, "etc/skiff/agent.env")
		if err := os.WriteFile(mine, []byte("SKIFF_NAME=mine\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run("DESTDIR=" + dest); err != nil {
			t.Fatalf("deploy/install again: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(mine); err != nil || string(b) != "SKIFF_NAME=mine\n" {
			t.Errorf("a second install changed agent.env: %q, %v", b, err)
		}
	})

	t.Run("no binaries", func(t *testing.T) {
		cmd := exec.Command(install)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SKIFF_BIN_DIR=" + t.TempDir(), "DESTDIR=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "make build") {
			t.Errorf("deploy/install without binaries: %v, %q; want a failure that says to run make build", err, out)
		}
	})

	t.Run("prefix and verify", func(t *testing.T) {
		root := t.TempDir()
		prefix, sysconf, units := root+"/prefix", root+"/etc", root+"/units"
		if out, err := run("PREFIX="+prefix, "SYSCONFDIR="+sysconf, "UNITDIR="+units); err != nil {
			t.Fatalf("deploy/install: %v\n%s", err, out)
		}
		var paths []string
		for _, d := range daemons {
			path := filepath.Join(units, unitPath(d))
			paths = append(paths, path)
			u := readUnit(t, path)
			if got, want := u.one(t, "ExecStart"), prefix+"/bin/skiff-"+d; got != want {
				t.Errorf("installed ExecStart=%s, want %s", got, want)
			}
			if got, want := u.one(t, "EnvironmentFile"), sysconf+"/skiff/"+d+".env"; got != want {
				t.Errorf("installed EnvironmentFile=%s, want %s", got, want)
			}
		}
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not on PATH, so the units were not verified; Debian's systemd package has it (deploy/install-deps)")
		}
		// --man=no: the units name no man pages, and a machine without
		// man-db must not fail the check.
		out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
		for line := range strings.Lines(string(out)) {
			if strings.Contains(line, "skiff-") {
				t.Errorf("systemd-analyze verify: %s", strings.TrimSpace(line))
			} else {
				t.Logf("systemd-analyze verify (not about the units): %s", strings.TrimSpace(line))
			}
		}
	})
}

func sameFile(t *testing.T, got, want string, mode os.FileMode) {
	t.Helper()
	g, err := os.ReadFile(got)
	if err != nil {
		t.Error(err)
		return
	}
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		t.Errorf("%s differs from %s", got, want)
	}
	if fi, err := os.Stat(got); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != mode {
		t.Errorf("%s has mode %v, want %v", got, fi.Mode().Perm(), mode)
	}
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

// buildBinaries builds the three commands once for the whole run, as make
// build does, into a directory TestMain removes.
func buildBinaries(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "skiff-units-test-")
		if built.err != nil {
			return
		}
		for name, pkg := range map[string]string{"skiff": "./cmd/skiff", "skiff-manager": "./cmd/manager", "skiff-agent": "./cmd/agent"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(built.dir, name), pkg)
			cmd.Dir = repo
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}
