package compose

import (
	"fmt"
	"regexp"
	"slices"
	"sync"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
)

// unsetVariables records the ${VARIABLES} that interpolation replaced with
// an empty string because they are unset and have no default. compose-go
// logs these through logrus; skiff returns them as warnings so that the CLI
// shows them with the others, and so that they can be tested.
type unsetVariables struct {
	mu    sync.Mutex // the loader may interpolate included files concurrently
	names map[string]struct{}
}

// variableName takes the name out of "$NAME" or "${NAME...}".
var variableName = regexp.MustCompile(`^\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// loaderOption swaps the loader's substitution function for one that
// records unset variables. The loader calls its options both before the
// interpolation options exist (when only reading files) and after, so a nil
// Interpolate is left alone.
func (u *unsetVariables) loaderOption(o *loader.Options) {
	if o.Interpolate == nil {
		return
	}
	interp := *o.Interpolate
	interp.Substitute = u.substitute
	o.Interpolate = &interp
}

func (u *unsetVariables) substitute(tmpl string, mapping template.Mapping) (string, error) {
	return template.SubstituteWithOptions(tmpl, mapping,
		template.WithoutLogging,
		template.WithReplacementFunction(u.replace))
}

// replace is template.DefaultReplacementFunc plus the record: "not applied"
// without an error is exactly the case compose-go would log as unset.
func (u *unsetVariables) replace(substring string, mapping template.Mapping, cfg *template.Config) (string, error) {
	value, applied, err := template.DefaultReplacementAppliedFunc(substring, mapping, cfg)
	if err == nil && !applied {
		if m := variableName.FindStringSubmatch(substring); m != nil {
			u.mu.Lock()
			if u.names == nil {
				u.names = map[string]struct{}{}
			}
			u.names[m[1]] = struct{}{}
			u.mu.Unlock()
		}
	}
	return value, err
}

// warnings returns one warning per unset variable, sorted by name.
func (u *unsetVariables) warnings() []Warning {
	u.mu.Lock()
	defer u.mu.Unlock()
	names := make([]string, 0, len(u.names))
	for n := range u.names {
		names = append(names, n)
	}
	slices.Sort(names)
	ws := make([]Warning, 0, len(names))
	for _, n := range names {
		ws = append(ws, Warning{Message: fmt.Sprintf("variable %q is not set: substituting an empty string", n)})
	}
	return ws
}
