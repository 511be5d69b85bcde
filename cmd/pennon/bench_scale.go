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

	"github.com/pennon-dev/pennon/bench"
)

// runBenchScale is `pennon bench scale`: what 1k, 10k, 100k flags cost.
func runBenchScale(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench scale", "pennon bench scale [flags]",
		"Generates flag documents of each size and measures, in this process, parse and\n"+
			"compile time (start-up), live heap, and the cost of applying a one-flag change.", stderr)
	_ = fs.String("config", "", "YAML file with settings")
	sizesFlag := fs.String("sizes", "1000,10000,100000", "comma-separated flag counts")
	updates := fs.Int("updates", 5, "one-flag updates per size (the median is reported)")
	jsonFile := fs.String("json", "", "write results as JSON to this file")
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
	res, err := bench.Scale(sizes, *updates)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "flags\tdocument\tparse\tcompile\tstart-up\theap\tupdate (1 flag)\t")
	for _, r := range res {
		fmt.Fprintf(tw, "%d\t%.1f MB\t%.1f ms\t%.1f ms\t%.1f ms\t%.1f MB\t%.2f ms\t\n",
			r.Flags, float64(r.DocBytes)/(1<<20), r.ParseMs, r.CompMs, r.ParseMs+r.CompMs, r.HeapMB, r.UpdateMs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *jsonFile != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("json: %w", err)
		}
	}
	return nil
}
