package compose

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v4"
)

// sources are the compose files as the user named them, parsed into YAML
// node trees on first use so that keys can be traced back to a file and
// line. compose-go's model keeps no positions, and its schema and
// conversion errors name a key but not where it is.
type sources struct {
	files  []sourceFile
	parsed bool
}

type sourceFile struct {
	name    string // as given in Options.Files
	abs     string
	content []byte
	docs    []*yaml.Node
}

// newSources names the files as compose-go reads them: relative to the
// process's directory (not Options.WorkingDir), "-" for stdin.
func newSources(files []string) *sources {
	s := &sources{}
	for _, f := range files {
		abs := f
		if f != "-" {
			if a, err := filepath.Abs(f); err == nil {
				abs = a
			}
		}
		s.files = append(s.files, sourceFile{name: f, abs: abs})
	}
	return s
}

// parse reads every file once. A file that cannot be read or parsed is
// skipped: compose-go has reported or will report why.
func (s *sources) parse() {
	if s.parsed {
		return
	}
	s.parsed = true
	for i := range s.files {
		f := &s.files[i]
		if f.name == "-" {
			continue // stdin has been consumed by compose-go
		}
		content, err := os.ReadFile(f.abs)
		if err != nil {
			continue
		}
		f.content = content
		dec := yaml.NewDecoder(bytes.NewReader(content))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); err != nil {
				if !errors.Is(err, io.EOF) {
					f.docs = nil
				}
				break
			}
			f.docs = append(f.docs, &doc)
		}
	}
}

// locate finds the key that path names. Later files win, as they override
// earlier ones; a key that is not in any file as such (compose-go creates
// some) is placed at its deepest ancestor found, as long as that is at
// least the service, network or volume it belongs to. ok is false when
// nothing useful is found.
func (s *sources) locate(path []string) (file string, line int, ok bool) {
	s.parse()
	bestDepth := 0
	for _, f := range s.files {
		for _, doc := range f.docs {
			l, depth := find(doc, path)
			if depth > 0 && depth >= bestDepth {
				file, line, bestDepth = f.name, l, depth
			}
		}
	}
	if bestDepth == 0 || (bestDepth < len(path) && bestDepth < 2) {
		return "", 0, false
	}
	return file, line, true
}

// find walks path down from n and returns the line of the deepest node it
// reaches and how many segments of path that took. Keys are placed on the
// line of the key rather than of its value, as an editor would show them.
func find(n *yaml.Node, path []string) (line, depth int) {
	if n = resolve(n); n == nil {
		return 0, 0
	}
	if len(path) == 0 {
		return n.Line, 0
	}
	seg := path[0]
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Value == seg {
				l, d := find(n.Content[i+1], path[1:])
				if d == 0 {
					l = k.Line
				}
				return l, d + 1
			}
		}
		// The key may come from an anchor merged in with `<<: *base`.
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "<<" {
				if l, d := find(n.Content[i+1], path); d > 0 {
					return l, d
				}
			}
		}
	case yaml.SequenceNode:
		if idx, err := strconv.Atoi(seg); err == nil && idx >= 0 && idx < len(n.Content) {
			l, d := find(n.Content[idx], path[1:])
			return l, d + 1
		}
		// Any item ("[]") or one written as a plain value, like a network
		// in `networks: [front]`: the first that holds the rest of the path
		// wins, else the one that holds most of it.
		bestLine, bestDepth := 0, -1
		for _, item := range n.Content {
			if seg != listItem && (item.Kind != yaml.ScalarNode || item.Value != seg) {
				continue
			}
			l, d := find(item, path[1:])
			if d > bestDepth {
				bestLine, bestDepth = l, d
			}
			if d == len(path)-1 {
				break
			}
		}
		if bestDepth >= 0 {
			return bestLine, bestDepth + 1
		}
	}
	return n.Line, 0
}

// findPort finds the short-syntax port that holds value, for the port
// errors that compose-go passes on without naming a key.
func (s *sources) findPort(value string) (path []string, file string, line int, ok bool) {
	s.parse()
	for _, f := range slices.Backward(s.files) {
		for _, doc := range f.docs {
			services := lookup(doc, "services")
			if services == nil || services.Kind != yaml.MappingNode {
				continue
			}
			for i := 0; i+1 < len(services.Content); i += 2 {
				ports := lookup(services.Content[i+1], "ports")
				if ports == nil || ports.Kind != yaml.SequenceNode {
					continue
				}
				for j, p := range ports.Content {
					if p.Kind == yaml.ScalarNode && strings.Contains(p.Value, value) {
						name := services.Content[i].Value
						return []string{"services", name, "ports", strconv.Itoa(j)}, f.name, p.Line, true
					}
				}
			}
		}
	}
	return nil, "", 0, false
}

// lookup returns the value of key in the mapping n (after documents and
// aliases), or nil.
func lookup(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

// resolve steps through documents and aliases to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && (n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	return n
}
