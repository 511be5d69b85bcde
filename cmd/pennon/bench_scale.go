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

	"github.com/pennon-dev/pennon/bench"
)

// scaleProcessEnv is added to the environment of the sidecar processes
// `bench scale --process` starts (tests set it to run their own binary as
// pennon).
var scaleProcessEnv []string

// runBenchScale is `pennon bench scale`: what 1k, 10k, 100k flags cost.
func runBenchScale(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench scale", "pennon bench scale [flags]",
		"Generates flag documents of each size and measures, in this process, start-up\n"+
			"(parse, hash, compile), live heap and resident set after load, the cost of a\n"+
			"one-flag change (apply + compile, then the hash), and OFREP throughput of the\n"+
			"sidecar server holding the set (one targeted flag; bulk over every flag).\n"+
			"With --process (the default) each size also runs in a real `pennon sidecar`\n"+
			"process started from this executable: time until ready, resident set after\n"+
			"load and its peak, and the same throughput runs against it.\n"+
			"100,000 flags takes minutes on a small machine: ask for it with --sizes.", stderr)
	_ = fs.String("config", "", "YAML file with settings")
	sizesFlag := fs.String("sizes", "1000,10000", "comma-separated flag counts (e.g. 1000,10000,100000)")
	updates := fs.Int("updates", 5, "one-flag updates per size (the median is reported)")
	loadFor := fs.Duration("load-duration", 2*time.Second, "throughput run per size and kind (0 skips the throughput runs)")
	conns := fs.Int("connections", 8, "connections for the throughput runs")
	jsonFile := fs.String("json", "", "write results as JSON to this file")
	process := fs.Bool("process", true, "also measure each size in a real sidecar process (this executable)")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1_000_000 {
			return fmt.Errorf("sizes: %q is not a flag count between 1 and 1000000", s)
		}
		sizes = append(sizes, n)
	}
	if *updates < 1 || *updates > 1000 {
		return fmt.Errorf("updates: must be between 1 and 1000 (got %d)", *updates)
	}
	if *loadFor < 0 || *loadFor > time.Minute {
		return fmt.Errorf("load-duration: must be between 0 and 1m (got %s)", *loadFor)
	}
	if *conns < 1 || *conns > 256 {
		return fmt.Errorf("connections: must be between 1 and 256 (got %d)", *conns)
	}
	o := bench.ScaleOptions{Sizes: sizes, Updates: *updates, LoadFor: *loadFor, Connections: *conns}
	if *process {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("process: cannot find this executable to start as a sidecar: %w (use --process=false)", err)
		}
		o.Process = &bench.ProcessOptions{Binary: exe, Env: scaleProcessEnv}
	}
	res, err := bench.Scale(o)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "flags\tdocument\tparse\thash\tcompile\tstart-up\theap\tRSS\tupdate (apply+compile)\tupdate CPU\tfull compile (same run)\tupdate hash\tsingle req/s\tbulk req/s\t")
	for _, r := range res {
		fmt.Fprintf(tw, "%d\t%.1f MB\t%.1f ms\t%.1f ms\t%.1f ms\t%.1f ms\t%.1f MB\t%.1f MB\t%.3f ms\t%.3f ms\t%.1f ms\t%.2f ms\t%.0f\t%.1f\t\n",
			r.Flags, float64(r.DocBytes)/(1<<20), r.ParseMs, r.HashMs, r.CompMs, r.StartupMs, r.HeapMB, r.RSSMB, r.UpdateMs, r.UpdateCPUMs, r.FullUpdateMs, r.UpdateHashMs, r.SingleRPS, r.BulkRPS)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *process {
		fmt.Fprintln(stdout, "\nthe same sets in a `pennon sidecar` process:")
		tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "flags\tready after\tRSS after load\tpeak RSS\tsingle req/s\tbulk req/s\t")
		for _, r := range res {
			if p := r.Process; p != nil {
				fmt.Fprintf(tw, "%d\t%.1f ms\t%.1f MB\t%.1f MB\t%.0f\t%.1f\t\n", r.Flags, p.ReadyMs, p.RSSMB, p.PeakMB, p.SingleRPS, p.BulkRPS)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if *jsonFile != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("json: %w", err)
		}
	}
	return nil
}
