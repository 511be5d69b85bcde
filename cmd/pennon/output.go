package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// The conventions every subcommand follows (docs/cli.md, "Conventions"),
// as a small API so that new subcommand files get them by construction:
//
//   - a command line the command cannot run (unknown verb, unknown or
//     misplaced flag, missing target, stray argument) is a usageError: main
//     prints it with the valid choices and exits 2, never running anything;
//   - output is a table (or one sentence) for people, and with --json the
//     JSON for scripts, never both and never raw JSON unasked: output.emit;
//   - commands with verbs declare them as []verb and call dispatch, which
//     also rejects flags that belong to another verb.

// usageError is a command line that cannot be run. main prints
// "pennon CMD: <message>" and exits 2, so scripts can tell a typo (2) from a
// failure of the operation (1).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usagef returns a usageError; the message should name the flag or argument
// and say what is expected instead.
func usagef(format string, a ...any) error {
	return usageError{msg: fmt.Sprintf(format, a...)}
}

// verb is one verb of a command with verbs (`pennon tokens revoke ID`).
type verb struct {
	name string
	// args names the positional arguments after the verb, all required
	// (e.g. {"KEY"}); more or fewer is a usage error.
	args []string
	// flags are the verb's own flags. The command's common flags (those in
	// dispatch's common list) are accepted by every verb; any other flag
	// given with this verb is a usage error naming the verbs it belongs to.
	flags []string
	run   func(args []string) error
}

// synopsis is "revoke ID".
func (v verb) synopsis() string {
	return strings.TrimSpace(v.name + " " + strings.Join(v.args, " "))
}

// verbList is "list, create, revoke ID": the valid verbs, for messages.
func verbList(verbs []verb) string {
	s := make([]string, len(verbs))
	for i, v := range verbs {
		s[i] = v.synopsis()
	}
	return strings.Join(s, ", ")
}

// dispatch runs the verb pos[0] with the positional arguments after it. An
// empty, unknown or misspelt verb, a wrong number of arguments, or a flag
// given on the command line that is neither common nor the verb's own is a
// usageError listing what is valid; nothing is sent anywhere. fs must have
// been parsed (parseArgs) so that its given flags are known.
func dispatch(cmd string, fs *flag.FlagSet, common []string, verbs []verb, pos []string) error {
	if len(pos) == 0 {
		return usagef("which verb? valid verbs: %s", verbList(verbs))
	}
	i := slices.IndexFunc(verbs, func(v verb) bool { return v.name == pos[0] })
	if i < 0 {
		return usagef("unknown verb %q; valid verbs: %s", pos[0], verbList(verbs))
	}
	v, args := verbs[i], pos[1:]
	if len(args) < len(v.args) {
		return usagef("%s %s needs %s", cmd, v.name, strings.Join(v.args[len(args):], " "))
	}
	if len(args) > len(v.args) {
		return usagef("%s %s: unexpected argument %q (usage: %s %s)", cmd, v.name, args[len(v.args)], cmd, v.synopsis())
	}
	var bad error
	fs.Visit(func(f *flag.Flag) {
		if bad != nil || slices.Contains(common, f.Name) || slices.Contains(v.flags, f.Name) {
			return
		}
		var owners []string
		for _, o := range verbs {
			if slices.Contains(o.flags, f.Name) {
				owners = append(owners, o.name)
			}
		}
		own := "none"
		if len(v.flags) > 0 {
			own = "--" + strings.Join(v.flags, ", --")
		}
		bad = usagef("--%s is not a flag of %s %s (it is for: %s; %s %s takes %s besides the common flags)",
			f.Name, cmd, v.name, strings.Join(owners, ", "), cmd, v.name, own)
	})
	if bad != nil {
		return bad
	}
	return v.run(args)
}

// parseArgs parses a command line in which flags and positional words
// (verb, key, id) may come in any order, and then fills unset flags from
// PENNON_* variables and the --config file (parseSettings). It returns the
// positional words in order. `--help` exits 0 after printing the usage;
// an unknown flag exits 2 (flag prints the error and the usage).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitError{code: 0}
			}
			return nil, exitError{code: 2}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if err := parseSettings(fs, nil); err != nil {
		return nil, err
	}
	return pos, nil
}

// noArgs is a usage error when a command without verbs got positional words.
func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q: %s takes no arguments, only flags", pos[0], cmd)
	}
	return nil
}

// output writes a command's result either for people (a table or a
// sentence) or, with --json, as indented JSON for scripts: never both.
type output struct {
	w    io.Writer
	json bool
}

// emit writes v as JSON with --json, else calls human. v may be raw JSON
// ([]byte or json.RawMessage, re-indented) or any value to marshal. human
// is required: a command that has nothing readable to show is not done.
func (o output) emit(v any, human func(w io.Writer) error) error {
	if !o.json {
		return human(o.w)
	}
	var b []byte
	switch raw := v.(type) {
	case []byte:
		b = raw
	case json.RawMessage:
		b = raw
	default:
		m, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode JSON output: %w", err)
		}
		b = m
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("JSON output: %w", err)
	}
	buf.WriteByte('\n')
	_, err := o.w.Write(buf.Bytes())
	return err
}

// table is an aligned text table: a header row in capitals, then rows.
// Empty cells print as "-" so that columns stay countable with awk.
type table struct{ tw *tabwriter.Writer }

// newTable starts a table on w; with no header it is a two-column
// "name value" block (see fields).
func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		cells := make([]any, len(header))
		for i, h := range header {
			cells[i] = strings.ToUpper(h)
		}
		t.row(cells...)
	}
	return t
}

// row adds one row; nil, "" and empty lists print as "-".
func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

// flush writes the table out; call it once, last.
func (t *table) flush() error { return t.tw.Flush() }

// cell renders one table cell.
func cell(c any) string {
	switch v := c.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return "-"
		}
		// A tab or newline in a value (a reason, a name) would break the
		// columns; show it escaped instead.
		return strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(v)
	case []string:
		return cell(strings.Join(v, ","))
	case fmt.Stringer:
		return cell(v.String())
	default:
		return cell(fmt.Sprint(v))
	}
}

// summarize joins list items for one table cell, naming the first three
// and counting the rest, so that one changeset of fifty flags does not
// push the next column off the screen (--json has them all).
func summarize(items []string) string {
	const shown = 3
	if len(items) <= shown {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s (+%d more)", strings.Join(items[:shown], ", "), len(items)-shown)
}

// fields prints "name:  value" lines, aligned: the human view of one object.
func fields(w io.Writer, kv ...any) error {
	t := newTable(w)
	for i := 0; i+1 < len(kv); i += 2 {
		t.row(fmt.Sprint(kv[i])+":", kv[i+1])
	}
	return t.flush()
}

// subcommand is the handler type of `pennon server <verb>` and
// `pennon bench <verb>`, whose bare form (no verb) runs the command itself.
type subcommand = func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// pickSubcommand returns the handler for args[0] when it names one of subs.
// A first word that is neither a subcommand nor a flag is a usage error
// listing the subcommands (instead of "unexpected argument" after parsing
// the bare command's flags); no word or a flag first returns nil, nil: run
// the bare command.
func pickSubcommand(cmd string, subs map[string]subcommand, args []string) (subcommand, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return nil, args, nil
	}
	if h, ok := subs[args[0]]; ok {
		return h, args[1:], nil
	}
	names := make([]string, 0, len(subs))
	for n := range subs {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, nil, usagef("unknown verb %q; valid verbs: %s, or none (flags only) to run %s itself", args[0], strings.Join(names, ", "), cmd)
}

// htmlEscapes are the escapes Go's JSON encoder writes for <, > and &
// (safe in HTML, noise in a terminal): unescapeHTML turns them back.
var htmlEscapes = strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&")

// unescapeHTML undoes Go's HTML-safe escapes in JSON text for display,
// leaving an escaped backslash followed by "u003e" alone.
func unescapeHTML(js []byte) []byte {
	if !bytes.Contains(js, []byte(`\u00`)) || bytes.Contains(js, []byte(`\\u00`)) {
		return js
	}
	return []byte(htmlEscapes.Replace(string(js)))
}
