package compose

import (
	"bytes"
	"fmt"
	"iter"
	"reflect"
	"unicode/utf8"
)

// yamlSyntax is a YAML syntax error placed in its file.
type yamlSyntax struct {
	line int
	msg  string
}

// yamlSyntaxError finds the YAML parser's error in err's chain and places
// it in content.
//
// compose-go passes on the error of go.yaml.in/yaml/v4, whose text names a
// line, but v4.0.0-rc.4 numbers lines from 0 in its parser's errors ("did
// not find expected key") and from 1 in its scanner's and composer's, so the
// text is one line early for the most common mistakes. The error's marks
// also hold the byte offset of the problem, which is right in every case
// that has one; the line is counted from that. The error types live in an
// internal package, so their fields are read by reflection, by name; if a
// later version renames them, ok is false and the error is shown as
// compose-go gives it.
func yamlSyntaxError(err error, content []byte) (yamlSyntax, bool) {
	for e := range errorChain(err) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			continue
		}
		msg, ok := stringField(v, "Message")
		if !ok {
			continue
		}
		line, col, ok := markPosition(v.FieldByName("Mark"), content)
		if !ok {
			continue
		}
		out := yamlSyntax{line: line, msg: fmt.Sprintf("invalid YAML at column %d: %s", col, msg)}
		if ctx, _ := stringField(v, "ContextMessage"); ctx != "" {
			if l, c, ok := markPosition(v.FieldByName("ContextMark"), content); ok {
				out.msg += fmt.Sprintf(" (%s that starts at line %d, column %d)", ctx, l, c)
			}
		}
		return out, true
	}
	return yamlSyntax{}, false
}

// markPosition gives the 1-based line and column of a yaml Mark: from its
// byte offset when it has one, else from its line and column, which are
// then the composer's, counted from 1 and 0.
func markPosition(mark reflect.Value, content []byte) (line, col int, ok bool) {
	if !mark.IsValid() || mark.Kind() != reflect.Struct {
		return 0, 0, false
	}
	index, ok1 := intField(mark, "Index")
	line, ok2 := intField(mark, "Line")
	col, ok3 := intField(mark, "Column")
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, false
	}
	if index == 0 && line > 0 {
		return line, col + 1, true
	}
	if index < 0 || index > len(content) {
		return 0, 0, false
	}
	before := content[:index]
	start := bytes.LastIndexByte(before, '\n') + 1
	return bytes.Count(before, []byte{'\n'}) + 1, utf8.RuneCount(before[start:]) + 1, true
}

func stringField(v reflect.Value, name string) (string, bool) {
	f := v.FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

func intField(v reflect.Value, name string) (int, bool) {
	f := v.FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Int {
		return 0, false
	}
	return int(f.Int()), true
}

// errorChain yields err and every error it wraps, depth first.
func errorChain(err error) iter.Seq[error] {
	return func(yield func(error) bool) {
		var walk func(error) bool
		walk = func(e error) bool {
			if e == nil {
				return true
			}
			if !yield(e) {
				return false
			}
			switch u := e.(type) {
			case interface{ Unwrap() error }:
				return walk(u.Unwrap())
			case interface{ Unwrap() []error }:
				for _, inner := range u.Unwrap() {
					if !walk(inner) {
						return false
					}
				}
			}
			return true
		}
		walk(err)
	}
}
