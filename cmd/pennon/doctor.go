package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/pennon-dev/pennon/config"
)

func init() {
	register(command{name: "doctor", summary: "find (and with --repair, erase) foreign messages in environments' changeset streams", run: runDoctor})
}

// runDoctor checks environments' streams through the control plane. The
// control plane already skips foreign messages on every read; doctor says
// which versions were skipped and why, and --repair erases them from the
// stream (see docs/security.md, "Signatures").
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("doctor", "pennon doctor [--env dev | --all] [--repair]",
		"Reads every message of an environment's changeset stream through the control plane and\n"+
			"reports foreign ones (unsigned, badly signed, unparsable, replayed at the wrong version or\n"+
			"environment) and missing ones (deleted from the stream), and whether the stored snapshot is\n"+
			"valid. Readers skip all of them automatically. --repair (admin token) erases the foreign\n"+
			"messages and writes a signed snapshot; state and versions do not change. Exit status 1 when\n"+
			"foreign messages or a bad snapshot remain.", stderr)
	all := fs.Bool("all", false, "check every environment")
	repair := fs.Bool("repair", false, "erase foreign messages from the stream and write a signed snapshot (admin)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs.Name(), pos); err != nil {
		return err
	}
	c.out = stdout
	envs := []string{c.env}
	if *all {
		raw, _, err := c.call(ctx, "GET", "/api/v1/envs", nil, nil)
		if err != nil {
			return err
		}
		var list struct{ Envs []config.EnvSettings }
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("list environments: %w", err)
		}
		envs = envs[:0]
		for _, e := range list.Envs {
			envs = append(envs, e.Name)
		}
	}
	var checks []*config.EnvCheck
	var repairs []*config.RepairResult
	unhealthy := false
	for _, env := range envs {
		if *repair {
			raw, _, err := c.call(ctx, "POST", envPath(env, "/repair"), nil, nil)
			if err != nil {
				return fmt.Errorf("repair %s: %w", env, err)
			}
			var res config.RepairResult
			if err := json.Unmarshal(raw, &res); err != nil {
				return fmt.Errorf("repair %s: %w", env, err)
			}
			repairs = append(repairs, &res)
		}
		raw, _, err := c.call(ctx, "GET", envPath(env, "/check"), nil, url.Values{})
		if err != nil {
			return fmt.Errorf("check %s: %w", env, err)
		}
		var ck config.EnvCheck
		if err := json.Unmarshal(raw, &ck); err != nil {
			return fmt.Errorf("check %s: %w", env, err)
		}
		checks = append(checks, &ck)
		unhealthy = unhealthy || len(ck.Foreign) > 0 || ck.Snapshot != "ok" && ck.Snapshot != "absent"
	}
	if c.asJSON {
		b, _ := json.MarshalIndent(map[string]any{"checks": checks, "repairs": repairs}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, r := range repairs {
			fmt.Fprintf(tw, "%s: repaired: erased %d foreign message(s) %s; signed snapshot written at version %d\n", r.Env, len(r.Deleted), versions(r.Deleted), r.SnapshotVersion)
		}
		fmt.Fprintf(tw, "ENV\tVERSION\tFOREIGN\tMISSING\tSNAPSHOT\tSIGNATURES\n")
		for _, ck := range checks {
			sigs := "verified"
			if !ck.Verified {
				sigs = "NOT CHECKED (control plane has no signing key)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", ck.Env, ck.Version, len(ck.Foreign), ck.Missing, ck.Snapshot, sigs)
		}
		for _, ck := range checks {
			for _, f := range ck.Foreign {
				fmt.Fprintf(tw, "  %s version %d: foreign (%s), skipped\n", ck.Env, f.Version, f.Reason)
			}
			if ck.Truncated {
				fmt.Fprintf(tw, "  %s: more than %d foreign messages; the list is cut\n", ck.Env, config.MaxCheckEntries)
			}
		}
		if unhealthy && !*repair {
			fmt.Fprintf(tw, "Foreign messages are skipped (the flag set is unchanged at their versions). To erase them: pennon doctor --env ENV --repair (admin token); then find the NATS identity that published them.\n")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if unhealthy {
		return exitError{code: 1}
	}
	return nil
}

func versions(vs []uint64) string {
	if len(vs) == 0 {
		return ""
	}
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v)
	}
	return "(versions " + strings.Join(s, ", ") + ")"
}
