package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/pennon-dev/pennon/lifecycle"
)

func init() {
	register(command{name: "refs", summary: "find flag keys in source code and compare them with an environment's flags", run: runRefs})
}

func runRefs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("refs", "pennon refs scan DIR [--env E] [--json]",
		"Walk DIR (any language; vendor, node_modules, .git, binary and files over 1 MiB skipped) for flag keys in OpenFeature calls (getBooleanValue, get_string_value, BooleanValue(ctx, …), useFlag, useBooleanFlagValue, …) and OFREP paths, and report the flags the code asks for that the environment does not have, and the environment's flags no code references, with file:line.", stderr)
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	return dispatch("refs", fs, adminCommon, []verb{
		{name: "scan", args: []string{"DIR"}, run: func(a []string) error {
			if st, err := os.Stat(a[0]); err != nil || !st.IsDir() {
				return usagef("DIR %q is not a directory to scan", a[0])
			}
			scan, err := lifecycle.ScanDir(a[0])
			if err != nil {
				return fmt.Errorf("scan %s: %w", a[0], err)
			}
			raw, _, err := c.call(ctx, "GET", envPath(c.env, "/flags"), nil, nil)
			if err != nil {
				return err
			}
			var list struct {
				Flags []struct {
					Key string `json:"key"`
				} `json:"flags"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("refs: unexpected answer listing flags: %w", err)
			}
			keys := make([]string, len(list.Flags))
			for i, f := range list.Flags {
				keys[i] = f.Key
			}
			rep := scan.Compare(c.env, keys)
			return output{w: stdout, json: c.asJSON}.emit(rep, func(w io.Writer) error { return printRefs(w, rep) })
		}},
	}, pos)
}

// printRefs lists the two differences with file:line, then the flags found.
func printRefs(w io.Writer, r *lifecycle.RefsReport) error {
	fmt.Fprintf(w, "%d files scanned (%d skipped: binary or over 1 MiB); %d of %s's flags referenced\n",
		r.Files, r.Skipped, len(r.Found), r.Env)
	section := func(title string, list []lifecycle.FlagRefs) error {
		fmt.Fprintf(w, "\n%s: %d\n", title, len(list))
		if len(list) == 0 {
			return nil
		}
		t := newTable(w, "flag", "where")
		for _, f := range list {
			for _, l := range f.Refs {
				t.row(f.Flag, fmt.Sprintf("%s:%d", l.File, l.Line))
			}
		}
		return t.flush()
	}
	if err := section("in code but not in "+r.Env, r.InCodeNotInEnv); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nin %s but referenced by no scanned code: %d\n", r.Env, len(r.InEnvNotInCode))
	for _, k := range r.InEnvNotInCode {
		fmt.Fprintln(w, "  "+k)
	}
	return section("referenced", r.Found)
}
