package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/spf13/cobra"
)

// listFlags are the flags of the commands that show objects: the output
// flags, and ps's --filter. One struct serves them all so that a view's
// fetch and print take the same flags whichever of them it registers.
type listFlags struct {
	quiet   bool
	format  string
	noTrunc bool
	filter  taskFilter
}

func (l *listFlags) register(cmd *cobra.Command, quietWhat string) {
	f := cmd.Flags()
	f.BoolVarP(&l.quiet, "quiet", "q", false, "Only display "+quietWhat)
	f.StringVar(&l.format, "format", "", formatHelp)
	f.BoolVar(&l.noTrunc, "no-trunc", false, "Do not truncate output")
}

const formatHelp = `Format output using a custom template:
'table':            Print output in table format with column headers (default)
'table TEMPLATE':   Print output in table format using the given Go template
'json':             Print in JSON format, one object per line
'TEMPLATE':         Print output using the given Go template`

// column is one field of a row type and its header in tables.
type column struct {
	field  string
	header string
}

// listing says how rows of type R print.
type listing[R any] struct {
	// columns are R's template fields, in the order docs list them.
	columns []column
	// table is the default format: a "table" template.
	table string
	// key is what -q prints for a row.
	key func(R) string
}

// print writes rows as the flags ask: keys only (-q), the default table,
// JSON lines, or a user's template with or without the table prefix.
func (l listing[R]) print(w io.Writer, flags listFlags, rows []R) error {
	if flags.quiet {
		for _, r := range rows {
			fmt.Fprintln(w, l.key(r))
		}
		return nil
	}
	format := flags.format
	if format == "" || format == "table" {
		format = l.table
	}
	if format == "json" {
		return printJSONLines(w, rows)
	}
	table, text := splitTableFormat(format)
	tmpl, err := parseTemplate(text)
	if err != nil {
		return err
	}
	var body bytes.Buffer
	for _, r := range rows {
		if err := tmpl.Execute(&body, r); err != nil {
			return l.templateError(err)
		}
		body.WriteByte('\n')
	}
	if !table {
		_, err := w.Write(body.Bytes())
		return err
	}
	// Docker's table layout: columns padded to at least 10 characters,
	// three spaces apart.
	tw := tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)
	if err := tmpl.Execute(tw, l.headers()); err != nil {
		return l.templateError(err)
	}
	fmt.Fprintln(tw)
	if _, err := tw.Write(body.Bytes()); err != nil {
		return err
	}
	return tw.Flush()
}

// headers maps each field to its header, so that executing a table's
// template on it gives the header row: `{{.Name}}\t{{.Image}}` becomes
// "NAME\tIMAGE", as in docker, whatever columns the user picked.
func (l listing[R]) headers() map[string]string {
	m := make(map[string]string, len(l.columns))
	for _, c := range l.columns {
		m[c.field] = c.header
	}
	return m
}

// templateError names the fields a template can use, since the usual
// mistake is a field name.
func (l listing[R]) templateError(err error) error {
	fields := make([]string, len(l.columns))
	for i, c := range l.columns {
		fields[i] = "." + c.field
	}
	return fmt.Errorf("--format: %v (the fields are %s)", err, strings.Join(fields, " "))
}

// splitTableFormat strips docker's "table" prefix, and turns the escapes
// that shells leave as two characters (`\t`, `\n`) into the real ones.
func splitTableFormat(format string) (table bool, text string) {
	if rest, ok := strings.CutPrefix(format, "table"); ok {
		table, format = true, strings.TrimSpace(rest)
	}
	return table, strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
}

// parseTemplate parses a --format template with docker's functions.
func parseTemplate(text string) (*template.Template, error) {
	t, err := template.New("format").Funcs(templateFuncs()).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("invalid --format template: %w", err)
	}
	return t, nil
}

// templateFuncs are the functions docker's --format templates offer.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"join":  strings.Join,
		"split": strings.Split,
		"lower": strings.ToLower,
		"upper": strings.ToUpper,
		"title": capitalize,
		"truncate": func(s string, n int) string {
			if len(s) <= n {
				return s
			}
			return s[:n]
		},
		"pad": func(s string, before, after int) string {
			return strings.Repeat(" ", before) + s + strings.Repeat(" ", after)
		},
		"println": fmt.Sprintln,
	}
}

// printJSONLines writes one JSON object per line, as docker's --format json.
func printJSONLines[R any](w io.Writer, rows []R) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
	}
	return nil
}
