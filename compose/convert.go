package compose

import (
	"maps"
	"reflect"
	"regexp"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// converter turns one loaded project into a StackSpec. It collects every
// problem instead of stopping at the first, so that one deploy attempt
// shows the user all there is to fix.
type converter struct {
	stack   string
	project *types.Project

	warnings []issue
	problems []issue

	// The networks and volumes that services use, by their compose keys:
	// only those are created (as docker stack deploy does) and checked.
	usedNetworks map[string]bool
	usedVolumes  map[string]bool
}

func newConverter(stack string, project *types.Project) *converter {
	return &converter{
		stack:        stack,
		project:      project,
		usedNetworks: map[string]bool{},
		usedVolumes:  map[string]bool{},
	}
}

func (c *converter) warnf(path []string, format string, args ...any) {
	c.warnings = append(c.warnings, newIssue(path, format, args...))
}

func (c *converter) errorf(path []string, format string, args ...any) {
	c.problems = append(c.problems, newIssue(path, format, args...))
}

// unsupported is the report function for findUnmapped.
func (c *converter) unsupported(path []string) {
	c.warnings = append(c.warnings, unsupportedKey(path))
}

// convert builds the spec; the caller checks c.problems before using it.
func (c *converter) convert() *skiffpb.StackSpec {
	findUnmapped(reflect.ValueOf(c.project).Elem(), projectKeys, nil, c.unsupported)

	spec := &skiffpb.StackSpec{Name: c.stack}
	for _, name := range slices.Sorted(maps.Keys(c.project.Services)) {
		spec.Services = append(spec.Services, c.service(c.project.Services[name]))
	}
	c.checkPublishedPorts(spec.Services)
	spec.Networks = c.networks()
	c.checkVolumes()
	return spec
}

// objectNameRule is swarmkit's rule for service names, which skiff's DNS
// also needs: a DNS label that may hold underscores, as <stack>_<name> does.
var objectNameRule = regexp.MustCompile(`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`)

// checkName reports a full service or network name that cannot be used.
func (c *converter) checkName(path []string, kind, full string) {
	switch {
	case len(full) > 63:
		c.errorf(path, "%s name %q is longer than 63 characters: shorten the stack or %s name", kind, full, kind)
	case !objectNameRule.MatchString(full):
		c.errorf(path, "%s name %q is not valid: use letters, digits, '-' and '_', starting and ending with a letter or digit", kind, full)
	}
}

// fullName is how skiff names a stack's services and networks, as docker
// stack deploy does.
func (c *converter) fullName(key string) string {
	return c.stack + "_" + key
}
