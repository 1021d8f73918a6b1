// Package envflag lets every flag of a command also be set from the
// environment, as SKIFF_<FLAG> with dashes as underscores (--data-dir reads
// SKIFF_DATA_DIR). A flag given on the command line wins over the variable.
package envflag

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Apply sets every flag of fs that was not given on the command line from
// its environment variable, if that is set.
func Apply(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := Name(f.Name)
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if setErr := fs.Set(f.Name, v); setErr != nil {
			err = fmt.Errorf("environment variable %s: %w", name, setErr)
		}
	})
	return err
}

// Name is the environment variable for a flag.
func Name(flag string) string {
	return "SKIFF_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
