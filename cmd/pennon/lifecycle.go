package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/lifecycle"
)

func init() {
	register(command{name: "lifecycle", summary: "which flags should go: owner, age, use, expiry and findings per flag", run: runLifecycle})
}

// openLifecycle builds the control plane's lifecycle service: its reports
// read the usage aggregator and its hourly check (run by startServer)
// emits findings to the notify dispatcher.
func openLifecycle(rs *runningServer, log *zap.Logger) (*lifecycle.Service, error) {
	o := lifecycle.Options{Store: rs.Store, Logger: log.Named("lifecycle")}
	if rs.Usage != nil {
		o.Usage = rs.Usage
	}
	if rs.Notify != nil {
		o.Notify = rs.Notify
	}
	return lifecycle.New(o)
}

func runLifecycle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("lifecycle", "pennon lifecycle [--env E] [--json]",
		"Show an environment's lifecycle report (docs/lifecycle.md): per flag its owner, age, last change, last evaluation, evaluations in the last 24 h and 7 d, expiry, and the findings: unused, stale, expired, expiring-soon, ownerless, settled (ready to retire, with the variant to keep), retirement-met, orphaned-prerequisite. Thresholds are the environment's lifecycle policy.", stderr)
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("lifecycle", pos); err != nil {
		return err
	}
	c.out = stdout
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/lifecycle"), nil, nil)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var r lifecycle.Report
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("lifecycle: unexpected answer: %w", err)
		}
		return printLifecycle(w, &r)
	})
}

// printLifecycle is the report for people: a heading, one row per flag,
// then one row per finding with its message. Times are relative to the
// report's own time, so the output reads the same whenever it is printed.
func printLifecycle(w io.Writer, r *lifecycle.Report) error {
	n := 0
	for _, f := range r.Flags {
		n += len(f.Findings)
	}
	fmt.Fprintf(w, "%s at version %d: %d flags, %d findings (%s)\n", r.Env, r.Version, len(r.Flags), n, r.GeneratedAt.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "policy: unused %dd, stale %dd, expiring within %dd, settled %dd; changes to expired flags: %s\n",
		r.Policy.UnusedDays, r.Policy.StaleDays, r.Policy.ExpiringSoonDays, r.Policy.SettledDays, r.Policy.ExpiredFlags)
	if !r.UsageKnown {
		fmt.Fprintln(w, r.UsageNote)
	}
	if len(r.Flags) == 0 {
		_, err := fmt.Fprintln(w, "no flags")
		return err
	}
	fmt.Fprintln(w)
	now := r.GeneratedAt
	t := newTable(w, "flag", "state", "owner", "age", "changed", "evaluated", "24h", "7d", "expires", "findings")
	for _, f := range r.Flags {
		age, changed := "", ""
		if f.AgeDays != nil {
			age = fmt.Sprintf("%dd", *f.AgeDays)
		}
		if f.LastChanged != nil {
			changed = ago(f.LastChanged.Time, now) + " (v" + fmt.Sprint(f.LastChanged.Version) + ")"
		}
		evaluated, d1, d7 := "unknown", "", ""
		if r.UsageKnown {
			evaluated = "never"
			if f.LastEvaluated != nil {
				evaluated = ago(*f.LastEvaluated, now)
			}
			if f.Evaluations24h != nil {
				d1, d7 = fmt.Sprint(*f.Evaluations24h), fmt.Sprint(*f.Evaluations7d)
			}
		}
		kinds := make([]string, len(f.Findings))
		for i, fd := range f.Findings {
			kinds[i] = fd.Kind
		}
		t.row(f.Key, f.State, f.Owner, age, changed, evaluated, d1, d7, f.Expires, kinds)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t = newTable(w, "flag", "finding", "detail")
	for _, f := range r.Flags {
		for _, fd := range f.Findings {
			t.row(f.Key, fd.Kind, fd.Message)
		}
		if rc := f.Retirement; rc != nil && rc.Checked && !rc.Met {
			t.row(f.Key, "retirement-pending", strings.Join(rc.Pending, "; "))
		}
	}
	return t.flush()
}

// ago is a duration before now in the largest whole unit (12m, 5h, 3d
// ago), or "just now" under a minute.
func ago(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
