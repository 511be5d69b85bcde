package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pennon-dev/pennon/bench/propagation"
)

func init() {
	benchSubcommands["propagation"] = runBenchPropagation
}

// runBenchPropagation is `pennon bench propagation`: commit → applied
// across N in-process sidecars following a real control plane over NATS.
func runBenchPropagation(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench propagation", "pennon bench propagation [flags]",
		"Starts an embedded NATS JetStream, the control plane and N sidecars in this\n"+
			"process (all on loopback), commits changes one at a time and measures how long\n"+
			"each takes to be served by every sidecar (commit → applied).", stderr)
	_ = fs.String("config", "", "YAML file with settings")
	sidecarsFlag := fs.String("sidecars", "1,10,50", "comma-separated sidecar counts, one run each")
	changes := fs.Int("changes", 200, "changes committed per run")
	pause := fs.Duration("pause", 5*time.Millisecond, "pause between commits")
	syncAlways := fs.Bool("sync-always", true, "fsync each commit, as `pennon server` does")
	flagsFlag := fs.String("flags", "1", "comma-separated flag-set sizes, one run each per sidecar count (e.g. 1,1000,10000)")
	jsonFile := fs.String("json", "", "write results as JSON to this file")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	var counts []int
	for _, s := range strings.Split(*sidecarsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 500 {
			return fmt.Errorf("sidecars: %q is not a sidecar count between 1 and 500", s)
		}
		counts = append(counts, n)
	}
	if *changes < 1 || *changes > 100000 {
		return fmt.Errorf("changes: must be between 1 and 100000 (got %d)", *changes)
	}
	if *pause < 0 {
		return fmt.Errorf("pause: must not be negative (got %v)", *pause)
	}
	var sizes []int
	for _, s := range strings.Split(*flagsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100000 {
			return fmt.Errorf("flags: %q is not a flag count between 1 and 100000", s)
		}
		sizes = append(sizes, n)
	}
	var results []propagation.Result
	for _, size := range sizes {
		for _, n := range counts {
			// Pause 0 would mean the package default; 1ns is "as fast as commits go".
			p := max(*pause, time.Nanosecond)
			res, err := propagation.Run(ctx, propagation.Options{Sidecars: n, Changes: *changes, Pause: p, SyncAlways: *syncAlways, Flags: size - 1})
			if err != nil {
				return fmt.Errorf("%d sidecars, %d flags: %w", n, size, err)
			}
			fmt.Fprintln(stderr, res)
			results = append(results, res)
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sidecars\tflags\tchanges\tsamples\tp50\tp99\tmax\tall-sidecars p99\tcommit p50\tcommit p99\tafter commit p50\tafter commit p99\t")
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t\n", r.Sidecars, r.Flags, r.Changes, r.Samples,
			us(r.P50), us(r.P99), us(r.Max), us(r.AllP99), us(r.CommitP50), us(r.CommitP99), us(r.AfterCommitP50), us(r.AfterCommitP99))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *jsonFile != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("json: %w", err)
		}
	}
	return nil
}
