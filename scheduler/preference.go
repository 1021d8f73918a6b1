package scheduler

import (
	"errors"
	"fmt"
	"strings"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Preference is one parsed placement preference: spread the tasks evenly
// over the values of a node label (node.labels.<name>) or an engine label
// (engine.labels.<name>). Make preferences with ParsePreferences.
type Preference struct {
	descriptor string
	attr       nodeAttr
}

// PreferenceError reports a placement preference that cannot be parsed.
type PreferenceError struct {
	// Spread is the preference's descriptor as written.
	Spread string
	// Err says what is wrong with it.
	Err error
}

// Error implements error.
func (e *PreferenceError) Error() string {
	return fmt.Sprintf("invalid placement preference %q: %v", e.Spread, e.Err)
}

// Unwrap returns what is wrong with the preference.
func (e *PreferenceError) Unwrap() error { return e.Err }

// ParsePreferences parses placement preferences. Swarm supports only label
// descriptors and silently ignores any other; skiff rejects them instead,
// so that a typo is seen at deploy time. Every bad preference is reported,
// each as a *PreferenceError, joined.
func ParsePreferences(prefs []*skiffpb.PlacementPreference) ([]Preference, error) {
	if len(prefs) == 0 {
		return nil, nil
	}
	out := make([]Preference, 0, len(prefs))
	var errs []error
	for _, p := range prefs {
		pref, err := parsePreference(p.GetSpread())
		if err != nil {
			errs = append(errs, &PreferenceError{Spread: p.GetSpread(), Err: err})
			continue
		}
		out = append(out, pref)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// parsePreference parses one spread descriptor.
func parsePreference(spread string) (Preference, error) {
	d := strings.TrimSpace(spread)
	if d == "" {
		return Preference{}, errors.New("missing spread descriptor")
	}
	attr, err := parseAttr(d)
	if err != nil && !errors.Is(err, errUnknownKey) {
		return Preference{}, fmt.Errorf("descriptor %q: %w", d, err)
	}
	if err != nil || (attr.kind != attrNodeLabel && attr.kind != attrEngineLabel) {
		return Preference{}, fmt.Errorf("cannot spread over %q (want node.labels.<name> or engine.labels.<name>)", d)
	}
	return Preference{descriptor: d, attr: attr}, nil
}

// value is the label's value on n; nodes without the label share the value
// "" and so form a group of their own, as in swarmkit.
func (p Preference) value(n *skiffpb.Node) string {
	return p.attr.value(n)
}

// String returns the preference's descriptor, e.g. "node.labels.zone".
func (p Preference) String() string {
	return p.descriptor
}
