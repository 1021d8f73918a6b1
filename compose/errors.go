package compose

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// FileError is a problem in the compose files, placed at the key it is
// about when that can be found.
type FileError struct {
	// File is the compose file, as given in Options.Files, and Line the
	// 1-based line of the key; empty and 0 when unknown.
	File string
	Line int
	// Key is the dotted path of the key from the top of the file, e.g.
	// "services.web.deploy.replicas"; empty when unknown.
	Key string
	// Err is the underlying error: compose-go's for invalid files, skiff's
	// own for files it cannot run.
	Err error

	// msg replaces Err's text where compose-go's is unhelpful.
	msg string
}

// Error gives the location, when known, then what is wrong.
func (e *FileError) Error() string {
	msg := e.msg
	if msg == "" {
		msg = e.Err.Error()
	}
	return withLocation(e.File, e.Line, msg)
}

// Unwrap returns the underlying error.
func (e *FileError) Unwrap() error { return e.Err }

// withLocation prefixes msg with "file:line: " as compilers do, so that
// editors and terminals can jump to it.
func withLocation(file string, line int, msg string) string {
	switch {
	case file != "" && line > 0:
		return fmt.Sprintf("%s:%d: %s", file, line, msg)
	case file != "":
		return file + ": " + msg
	default:
		return msg
	}
}

// How compose-go's errors name the keys they are about (it gives no line
// for them), and how the YAML parser's name the line.
var (
	// mapstructure decoding: 'services[web].deploy.resources.limits.memory'.
	decodedKey = regexp.MustCompile(`'((?:services|networks|volumes|configs|secrets|jobs|models)\[[^\]]+\][^']*)'`)
	// schema validation: "services.web.deploy additional properties
	// 'replica' not allowed"; at the top level the path is empty.
	additionalKey = regexp.MustCompile(`(\S*)\s+additional propert(?:y|ies) '([^']+)'`)
	// interpolation and schema validation: services.web.deploy.replicas.
	dottedKey = regexp.MustCompile(`\b((?:services|networks|volumes|configs|secrets|jobs|models)(?:\.[A-Za-z0-9_-]+)+)`)
	// a whole key path, as the parent in additionalKey.
	keyPath = regexp.MustCompile(`^(?:services|networks|volumes|configs|secrets|jobs|models)(?:\.[A-Za-z0-9_-]+)*$`)
	// port parsing (docker's nat package), which names no key: "Invalid
	// hostPort: abc".
	portError = regexp.MustCompile(`(?i)invalid [a-z ]+: (\S+)$`)
	// consistency checks: service "web" refers to undefined network front.
	undefinedRef = regexp.MustCompile(`service "([^"]+)" refers to undefined (network|volume|config|secret|model) ([^\s:]+)`)
	// consistency checks: service "web" depends on undefined service "db".
	undefinedDependency = regexp.MustCompile(`service "([^"]+)" depends on undefined service "([^"]+)"`)
	// consistency checks: service "web" has neither an image nor ...
	serviceRef = regexp.MustCompile(`service "([^"]+)"`)
	// YAML syntax errors: "... line 3, column 4: did not find expected key";
	// the last line named is where the parser gave up.
	yamlLine = regexp.MustCompile(`line (\d+)`)
	// What the schema says about a key it does not know.
	unknownKey = " false schema"
)

// fileError places an error from compose-go's loader. A YAML syntax error
// names its file and line; the other errors name at most the key, which is
// then looked up in the files. The error is kept whole either way, so that
// what compose-go said survives.
func (s *sources) fileError(err error) *FileError {
	fe := &FileError{Err: err}
	msg := err.Error()
	s.parse()
	for _, f := range s.files {
		if !strings.Contains(msg, "failed to parse "+f.abs+":") {
			continue
		}
		fe.File = f.name
		if syn, ok := yamlSyntaxError(err, f.content); ok {
			fe.Line, fe.msg = syn.line, syn.msg
		} else if m := yamlLine.FindAllStringSubmatch(msg, -1); m != nil {
			fe.Line, _ = strconv.Atoi(m[len(m)-1][1])
		}
		return fe
	}
	for _, path := range keyPaths(msg) {
		if file, line, ok := s.locate(path); ok {
			fe.File, fe.Line, fe.Key = file, line, renderPath(path)
			if strings.Contains(msg, renderPath(path)+unknownKey) {
				fe.msg = fmt.Sprintf("%s: unknown key %q: check its spelling and indentation against the Compose Specification",
					fe.Key, path[len(path)-1])
			}
			break
		}
	}
	if fe.Key == "" {
		if m := portError.FindStringSubmatch(msg); m != nil {
			if path, file, line, ok := s.findPort(m[1]); ok {
				fe.File, fe.Line, fe.Key = file, line, renderPath(path)
				fe.msg = fmt.Sprintf("%s: %s", renderPath(path[:3]), msg)
			}
		}
	}
	if fe.File == "" && len(s.files) == 1 {
		fe.File = s.files[0].name
	}
	return fe
}

// keyPaths finds the paths of keys that an error message names, most
// specific first.
func keyPaths(msg string) [][]string {
	var paths [][]string
	for _, m := range additionalKey.FindAllStringSubmatch(msg, -1) {
		var parent []string
		if keyPath.MatchString(m[1]) {
			parent = strings.Split(m[1], ".")
		}
		paths = append(paths, append(parent, m[2]))
	}
	for _, m := range decodedKey.FindAllStringSubmatch(msg, -1) {
		// services[web].deploy → services.web.deploy
		p := strings.NewReplacer("[", ".", "]", "").Replace(m[1])
		paths = append(paths, strings.Split(p, "."))
	}
	for _, m := range dottedKey.FindAllStringSubmatch(msg, -1) {
		paths = append(paths, strings.Split(m[1], "."))
	}
	for _, m := range undefinedRef.FindAllStringSubmatch(msg, -1) {
		paths = append(paths, []string{"services", m[1], m[2] + "s", m[3]})
	}
	for _, m := range undefinedDependency.FindAllStringSubmatch(msg, -1) {
		paths = append(paths, []string{"services", m[1], "depends_on", m[2]})
	}
	for _, m := range serviceRef.FindAllStringSubmatch(msg, -1) {
		paths = append(paths, []string{"services", m[1]})
	}
	return paths
}

// locatedError turns a problem the converter found into a FileError.
func (s *sources) locatedError(p issue) error {
	fe := &FileError{Err: errors.New(p.msg), Key: renderPath(p.path)}
	fe.File, fe.Line, _ = s.locate(p.path)
	return fe
}

// locatedWarning turns a warning the converter found into a Warning.
func (s *sources) locatedWarning(p issue) Warning {
	w := Warning{Key: renderPath(p.path), Message: p.msg}
	w.File, w.Line, _ = s.locate(p.path)
	return w
}
