package compose

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Options says which compose files to load and how.
type Options struct {
	// Files are the compose files in the order given with -c: each file
	// overrides the ones before it, as `docker compose -f a -f b` merges
	// them. "-" reads standard input.
	Files []string
	// WorkingDir is the directory that relative paths (bind mounts,
	// env_file, extends, include) and the .env file are found in. Empty
	// means the directory of the first file.
	WorkingDir string
	// Environ is the environment ${VARIABLE}s are interpolated from, as
	// KEY=VALUE pairs; the CLI passes os.Environ(). A variable set here wins
	// over the same variable in WorkingDir/.env, as in docker compose.
	Environ []string
	// StackName names the stack; it prefixes every service and network
	// name. It must be a valid compose project name: lowercase letters,
	// digits, '-' and '_', starting with a letter or digit.
	StackName string
}

// Load reads the compose files, interpolates them, validates them and
// converts them into the StackSpec that a manager deploys.
//
// The warnings name every key of the files that skiff accepts but does not
// honour, and every variable that was interpolated as empty because it is
// unset; the CLI shows them before deploying. They are sorted by key, and
// the spec lists its services and networks sorted by name, so that the same
// files always give the same output.
//
// An error is either an invalid file ("invalid compose file: ...", with
// compose-go's reason) or a valid file that skiff cannot run as written
// ("cannot deploy stack ...", listing every problem). Both name the key and,
// where it can be found, the file and line: each problem is a *FileError.
func Load(ctx context.Context, opts Options) (*skiffpb.StackSpec, []Warning, error) {
	if len(opts.Files) == 0 {
		return nil, nil, errors.New("no compose file given: name one with -c FILE")
	}
	if err := validateStackName(opts.StackName); err != nil {
		return nil, nil, err
	}
	src := newSources(opts.Files)

	vars := &unsetVariables{}
	project, err := loadProject(ctx, opts, vars)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid compose file: %w", src.fileError(err))
	}

	c := newConverter(opts.StackName, project)
	spec := c.convert()
	if len(c.problems) > 0 {
		errs := make([]error, 0, len(c.problems))
		for _, p := range c.problems {
			errs = append(errs, src.locatedError(p))
		}
		return nil, nil, fmt.Errorf("cannot deploy stack %q: %w", opts.StackName, errors.Join(errs...))
	}

	warnings := vars.warnings()
	for _, w := range c.warnings {
		warnings = append(warnings, src.locatedWarning(w))
	}
	slices.SortStableFunc(warnings, func(a, b Warning) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Message, b.Message))
	})
	// A key found in several list items is warned about once.
	return spec, slices.Compact(warnings), nil
}

// validateStackName applies compose's rule for project names, which also
// keeps every derived service name a valid DNS label prefix.
func validateStackName(name string) error {
	if name == "" {
		return errors.New("no stack name given")
	}
	if loader.NormalizeProjectName(name) != name {
		return fmt.Errorf("invalid stack name %q: use only lowercase letters, digits, '-' and '_', starting with a letter or digit", name)
	}
	return nil
}

// loadProject runs compose-go's loader the way `docker compose config` does,
// with three differences: the project name is the stack name; every profile
// is active, because skiff deploys all services (and warns about profiles);
// and unset variables are collected as warnings instead of being logged.
func loadProject(ctx context.Context, opts Options, vars *unsetVariables) (*types.Project, error) {
	po, err := cli.NewProjectOptions(opts.Files,
		cli.WithName(opts.StackName),
		cli.WithWorkingDirectory(opts.WorkingDir),
		cli.WithEnv(opts.Environ),
		withDefaultDotEnv,
		cli.WithDotEnv,
		// Bind mount sources become absolute against the working
		// directory, as docker stack deploy makes them.
		cli.WithResolvedPaths(true),
		// env_file is folded into environment by the loader.
		cli.WithDiscardEnvFile,
		cli.WithProfiles([]string{"*"}),
		cli.WithLoadOptions(vars.loaderOption),
	)
	if err != nil {
		return nil, err
	}
	return po.LoadProject(ctx)
}

// withDefaultDotEnv reads the working directory's .env file if there is one.
// cli.WithEnvFiles would do the same but consults the process environment
// (COMPOSE_DISABLE_ENV_FILE) rather than Options.Environ.
func withDefaultDotEnv(o *cli.ProjectOptions) error {
	wd, err := o.GetWorkingDir()
	if err != nil {
		return fmt.Errorf("finding the working directory: %w", err)
	}
	path := filepath.Join(wd, ".env")
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("reading %s: %w", path, err)
	case fi.Mode().IsRegular():
		o.EnvFiles = []string{path}
	}
	return nil
}
