package cli

import (
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// view describes a command that shows what it fetches from the managers:
// every ls, ps and inspect. They differ only in what they fetch and how
// it prints, so one builder makes them all; that keeps their connecting,
// flags and errors alike, which scripts that drive several of them rely
// on.
type view[T any] struct {
	use     string
	aliases []string
	short   string
	long    string
	args    cobra.PositionalArgs
	out     output[T]
	fetch   fetchFunc[T]
}

// fetchFunc gets a view's objects over the connection the builder opened.
// It is handed the parsed flags because they change what is fetched:
// --no-trunc the IDs in rows, -q whether node names are needed, --filter
// which tasks.
type fetchFunc[T any] func(cmd *cobra.Command, ctl skiffpb.ControlClient, args []string, flags listFlags) ([]T, error)

// output is a view's flags and the printing they steer; they come as a
// pair because each way of printing takes its own flags.
type output[T any] struct {
	register func(cmd *cobra.Command, flags *listFlags)
	print    func(w io.Writer, flags listFlags, items []T) error
}

// command connects before fetching, so that every view fails alike on a
// bad --manager, and parses the flags into the one listFlags that fetch
// and print both read.
func (v view[T]) command(a *app) *cobra.Command {
	var flags listFlags
	cmd := &cobra.Command{
		Use:     v.use,
		Aliases: v.aliases,
		Short:   v.short,
		Long:    v.long,
		Args:    v.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctl, err := a.control()
			if err != nil {
				return err
			}
			items, err := v.fetch(cmd, ctl, args, flags)
			if err != nil {
				return err
			}
			return v.out.print(a.stdout(), flags, items)
		},
	}
	v.out.register(cmd, &flags)
	return cmd
}

// listOutput prints rows as l says, with -q, --format and --no-trunc;
// quietWhat is what -q prints, for its help.
func listOutput[R any](l listing[R], quietWhat string) output[R] {
	return output[R]{
		register: func(cmd *cobra.Command, flags *listFlags) { flags.register(cmd, quietWhat) },
		print:    l.print,
	}
}

// taskOutput is listOutput for ps commands, which also take --filter.
func taskOutput() output[taskRow] {
	return output[taskRow]{
		register: func(cmd *cobra.Command, flags *listFlags) {
			flags.register(cmd, "task IDs")
			cmd.Flags().StringArrayVarP(&flags.filter.filters, "filter", "f", nil, "Filter output (desired-state=running|shutdown)")
		},
		print: taskListing().print,
	}
}

// inspectOutput prints messages as docker's inspect does, with -f or
// --format; fields are examples of template fields, for the help.
func inspectOutput[M proto.Message](fields string) output[M] {
	return output[M]{
		register: func(cmd *cobra.Command, flags *listFlags) {
			cmd.Flags().StringVarP(&flags.format, "format", "f", "", "Format output using a Go template (fields as in the JSON: "+fields+")")
		},
		print: func(w io.Writer, flags listFlags, msgs []M) error { return printInspect(w, flags.format, msgs) },
	}
}

// eachArg is an inspect view's fetch: inspect takes several objects, and
// fails on the first that cannot be had, before printing any.
func eachArg[M any](get func(cmd *cobra.Command, ctl skiffpb.ControlClient, ref string) (M, error)) fetchFunc[M] {
	return func(cmd *cobra.Command, ctl skiffpb.ControlClient, args []string, _ listFlags) ([]M, error) {
		out := make([]M, 0, len(args))
		for _, ref := range args {
			m, err := get(cmd, ctl, ref)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
}
