package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/bench"
)

func init() {
	register(command{
		name:    "bench",
		summary: "load-test an OFREP endpoint (pennon, flagd, GO Feature Flag) or measure scale",
		run:     runBench,
	})
}

// benchSubcommands are `pennon bench <name>`; the default is the load test.
var benchSubcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"scale": runBenchScale,
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if sub, rest, err := pickSubcommand("bench", benchSubcommands, args); sub != nil || err != nil {
		if err != nil {
			return err
		}
		return sub(ctx, rest, stdout, stderr)
	}
	fs := newFlagSet("bench", "pennon bench [scale] [flags]",
		"Sends OFREP evaluations to one or more targets, one after the other, and reports\n"+
			"latency percentiles and throughput as a table, JSON and PNG plots.\n"+
			"Targets: url (--url: pennon, flagd or GO Feature Flag relay proxy), bare (an\n"+
			"in-process fasthttp handler with a fixed 40-byte body: the ceiling), pennon and\n"+
			"pennon-nocache (pennon's sidecar server in-process, bench/flags/bench-flags.json,\n"+
			"with and without its response cache).\n"+
			"Scenarios: "+scenarioList()+".\n"+
			"`pennon bench scale` measures memory, start-up and update cost for 1k-100k flags.", stderr)
	var (
		_           = fs.String("config", "", "YAML file with settings")
		targetURL   = fs.String("url", "http://127.0.0.1:8016", "base URL of the OFREP server for target url")
		targets     = fs.String("target", "url", "comma-separated targets to run in order: url, bare, pennon, pennon-nocache, or LABEL=URL (e.g. flagd=http://127.0.0.1:8016)")
		scenario    = fs.String("scenario", "static", "scenario: "+strings.Join(bench.ScenarioNames(), ", "))
		conns       = fs.Int("connections", 16, "concurrent connections")
		rate        = fs.Float64("rate", 0, "open loop at this many requests/s in total (latency corrected for coordinated omission); 0 = closed loop")
		duration    = fs.Duration("duration", 10*time.Second, "measured duration per target (0 = bounded by --requests only)")
		requests    = fs.Int64("requests", 0, "measured requests per target (0 = bounded by --duration only)")
		warmup      = fs.Duration("warmup", 2*time.Second, "warm-up before measuring, per target")
		timeout     = fs.Duration("timeout", 2*time.Second, "timeout of one request")
		jsonFile    = fs.String("json", "", "write the report as JSON to this file")
		plotDir     = fs.String("plot-dir", "", "write PNG plots (latency percentiles, throughput, p99 over time) to this directory")
		allowRemote = fs.Bool("allow-remote", false, "allow a target URL that is not a loopback address")
		seed        = fs.Uint64("seed", 1, "seed for generated contexts")
		quiet       = fs.Bool("quiet", false, "no progress lines on stderr")
		headers     headerList
		keyStatic   = fs.String("flag-static", bench.DefaultFlagKeys.Static, "flag key for the static scenario")
		keyTarget   = fs.String("flag-targeting", bench.DefaultFlagKeys.Targeting, "flag key for the targeting and unique scenarios")
		keyFrac     = fs.String("flag-fractional", bench.DefaultFlagKeys.Fractional, "flag key for the fractional scenario")
	)
	fs.Var(&headers, "header", "add \"Name: value\" to every request (repeatable; e.g. an API key)")
	maxErr := percentFlag(0.01)
	fs.Var(&maxErr, "max-error-rate", "exit 1 when a target's share of failed requests exceeds this (e.g. 1% or 0.01; 0 = no error allowed)")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	sc, err := bench.NewScenario(*scenario, bench.FlagKeys{Static: *keyStatic, Targeting: *keyTarget, Fractional: *keyFrac})
	if err != nil {
		return err
	}
	names, err := parseTargets(*targets)
	if err != nil {
		return err
	}
	var progress io.Writer = stderr
	if *quiet {
		progress = nil
	}
	rep := bench.NewReport(time.Now())
	var runErr error
	for _, name := range names {
		url, label, stop, err := startBenchTarget(name, *targetURL)
		if err != nil {
			return err
		}
		res, err := bench.Run(ctx, bench.Options{
			URL: url, Label: label, Scenario: sc, Connections: *conns, Rate: *rate,
			Duration: *duration, Requests: *requests, Warmup: *warmup, Timeout: *timeout,
			AllowRemote: *allowRemote, Seed: *seed, Progress: progress, Headers: headers,
		})
		if serr := stop(); serr != nil && err == nil {
			err = serr
		}
		if res != nil {
			rep.Results = append(rep.Results, res)
		}
		if err != nil {
			runErr = fmt.Errorf("target %s: %w", label, err)
			break
		}
	}
	if len(rep.Results) == 0 {
		return runErr
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if *jsonFile != "" {
		if err := writeReportJSON(*jsonFile, rep); err != nil {
			return err
		}
	}
	if *plotDir != "" {
		paths, err := rep.WritePlots(*plotDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plots: %s\n", strings.Join(paths, ", "))
	}
	if runErr != nil {
		return runErr
	}
	// Latency and throughput measured on failures describe nothing: a run
	// whose errors exceed the threshold fails, after its report is out.
	return rep.ErrorRateError(float64(maxErr))
}

// percentFlag is a share from 0 to 1, written as "1%" or "0.01".
type percentFlag float64

func (p *percentFlag) String() string {
	return strconv.FormatFloat(float64(*p)*100, 'g', -1, 64) + "%"
}

func (p *percentFlag) Set(v string) error {
	s, pct := strings.CutSuffix(strings.TrimSpace(v), "%")
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return fmt.Errorf("want a share such as 1%% or 0.01, got %q", v)
	}
	if pct {
		f /= 100
	}
	if f < 0 || f > 1 || math.IsNaN(f) {
		return fmt.Errorf("want a share between 0%% and 100%%, got %q", v)
	}
	*p = percentFlag(f)
	return nil
}

func scenarioList() string {
	var b strings.Builder
	for _, n := range bench.ScenarioNames() {
		sc, _ := bench.NewScenario(n, bench.FlagKeys{})
		fmt.Fprintf(&b, "\n  %-10s %s", n, sc.Description)
	}
	return b.String()
}

// benchTargets are the in-process or external targets `--target` accepts.
var benchTargets = []string{"url", "bare", "pennon", "pennon-nocache"}

// parseTargets splits --target. An entry is a known target name, or
// LABEL=URL to load any OFREP server under that label (so pennon, flagd and
// GO Feature Flag can be measured side by side in one run).
func parseTargets(s string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if label, url, ok := strings.Cut(t, "="); ok {
			if label == "" || url == "" {
				return nil, fmt.Errorf("target: %q: want LABEL=URL, e.g. flagd=http://127.0.0.1:8016", t)
			}
			out = append(out, t)
			continue
		}
		ok := false
		for _, known := range benchTargets {
			ok = ok || t == known
		}
		if !ok {
			return nil, fmt.Errorf("target: unknown %q (allowed: %s, or LABEL=URL)", t, strings.Join(benchTargets, ", "))
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, errors.New("target: empty (allowed: " + strings.Join(benchTargets, ", ") + ", or LABEL=URL)")
	}
	return out, nil
}

// startBenchTarget returns the URL to load for a target name, starting it
// in-process when it is one of ours, and a stop function.
func startBenchTarget(name, url string) (string, string, func() error, error) {
	switch name {
	case "bare", "pennon", "pennon-nocache":
		var t *bench.Target
		var err error
		switch name {
		case "bare":
			t, err = bench.StartBare()
		case "pennon":
			t, err = bench.StartPennon(bench.PennonOptions{})
		default:
			t, err = bench.StartPennon(bench.PennonOptions{CacheBytes: -1})
		}
		if err != nil {
			return "", "", nil, err
		}
		return t.URL, t.Label, t.Close, nil
	default:
		if label, u, ok := strings.Cut(name, "="); ok {
			return u, label, func() error { return nil }, nil
		}
		return url, "url " + strings.TrimPrefix(url, "http://"), func() error { return nil }, nil
	}
}

func writeReportJSON(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	err = rep.WriteJSON(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("json: write %s: %w", path, err)
	}
	return nil
}

// headerList is a repeatable --header flag. String never shows values: a
// header may carry an API key, and --help prints defaults.
type headerList []string

func (h *headerList) String() string { return "" }

func (h *headerList) Set(v string) error {
	*h = append(*h, v)
	return nil
}
