package compose

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// Warning is something in the compose files that skiff accepts but does not
// honour: a key it ignores, or a variable interpolated as empty.
type Warning struct {
	// File is the compose file the key was found in, as given in
	// Options.Files, and Line its 1-based line; empty and 0 when unknown
	// (for keys that compose-go creates, or files read from stdin).
	File string
	Line int
	// Key is the key's dotted path from the top of the file, with "[]" for
	// list items: "services.web.privileged",
	// "services.web.ports[].host_ip", "networks.front.driver_opts". It is
	// empty for warnings that are not about one key.
	Key string
	// Message is the text for the user, e.g.
	// `service web: ignoring unsupported key "privileged"`.
	Message string
}

// String gives the warning as the CLI prints it: the location, when known,
// then the message.
func (w Warning) String() string {
	return withLocation(w.File, w.Line, w.Message)
}

// issue is a warning or an error found while converting, before it is
// located in the files.
type issue struct {
	path []string
	msg  string
}

// newIssue builds the message from the object that path points into, so
// that every message says which service, network or volume it is about.
func newIssue(path []string, format string, args ...any) issue {
	msg := fmt.Sprintf(format, args...)
	if obj := objectName(path); obj != "" {
		msg = obj + ": " + msg
	}
	return issue{path: slices.Clone(path), msg: msg}
}

// objectName names what a path points into: "service web", "network
// front", "volume data"; empty for top-level keys.
func objectName(path []string) string {
	if len(path) < 2 {
		return ""
	}
	switch path[0] {
	case "services":
		return "service " + path[1]
	case "networks":
		return "network " + path[1]
	case "volumes":
		return "volume " + path[1]
	}
	return ""
}

// unsupportedKey is the warning for a key skiff ignores.
func unsupportedKey(path []string) issue {
	if len(path) == 1 {
		return newIssue(path, "ignoring unsupported top-level key %q", path[0])
	}
	return newIssue(path, "ignoring unsupported key %q", renderPath(path[2:]))
}

// renderPath joins a path with dots, writing list items as "[]".
func renderPath(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 && p != listItem {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// listItem is the path segment of any element of a list.
const listItem = "[]"

// keySet is the set of compose keys that skiff maps, by their YAML names. A
// key whose value is nil is mapped with everything under it. A key whose
// value is a keySet is mapped only in those sub-keys; the rest of what is
// under it is checked in turn, in every element when it is a list or a map.
type keySet map[string]keySet

// extensionsType is the type of x-* keys, which by definition are for
// other tools and never reported.
var extensionsType = reflect.TypeFor[types.Extensions]()

// findUnmapped reports the path of every key under v that is set but not in
// mapped. It works on compose-go's types rather than on the YAML, so keys
// that the loader moved or normalised are seen where the converter sees
// them, and a key that a newer compose-go adds is reported until the
// converter maps it and adds it to a keySet.
func findUnmapped(v reflect.Value, mapped keySet, path []string, report func(path []string)) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			findUnmapped(v.Elem(), mapped, path, report)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			findUnmapped(v.Index(i), mapped, append(path, listItem), report)
		}
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			return cmp.Compare(fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface()))
		})
		for _, k := range keys {
			findUnmapped(v.MapIndex(k), mapped, append(path, fmt.Sprint(k.Interface())), report)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, inline := yamlKey(f)
			if !f.IsExported() || f.Type == extensionsType || name == "-" || strings.HasPrefix(name, "#") {
				continue
			}
			fv := v.Field(i)
			if inline {
				findUnmapped(fv, mapped, path, report)
				continue
			}
			sub, ok := mapped[name]
			switch {
			case !ok:
				if !isEmpty(fv) {
					report(slices.Concat(path, []string{name}))
				}
			case sub != nil:
				findUnmapped(fv, sub, append(path, name), report)
			}
		}
	}
}

// yamlKey is the key a struct field is read from, and whether the field's
// own keys sit inline in its parent's (compose-go's embedded specs).
func yamlKey(f reflect.StructField) (name string, inline bool) {
	tag, ok := f.Tag.Lookup("yaml")
	if !ok {
		return f.Name, f.Anonymous
	}
	name, opts, _ := strings.Cut(tag, ",")
	return name, name == "" && slices.Contains(strings.Split(opts, ","), "inline")
}

// isEmpty says whether a field was left unset: compose-go leaves absent
// keys at their zero value, and empty lists and maps mean nothing either.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	default:
		return v.IsZero()
	}
}
