package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/url"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/bench"
	"github.com/pennon-dev/pennon/experiment"
)

func init() {
	register(command{name: "experiment", summary: "experiment reports: per-variant rates, lift, p-values and sample-ratio checks", run: runExperiment})
}

// openExperiments opens the control plane's experiment aggregates (they
// follow the experiments telemetry stream).
func openExperiments(ctx context.Context, rs *runningServer, js jetstream.JetStream, o serverOptions, log *zap.Logger) (*experiment.Aggregator, error) {
	a, err := experiment.OpenAggregator(ctx, js, rs.Telemetry, experiment.AggregatorOptions{Replicas: o.replicas, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("experiments: %w", err)
	}
	return a, nil
}

func runExperiment(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("experiment", "pennon experiment list|report FLAG [--env E] [--metric M] [--png FILE] [--json]",
		"Experiment reports from the control plane: per variant, exposed units, conversion rate with a 95 % interval, mean value, "+
			"lift against the control with its interval and p-value (two-proportion z-test, Welch's t-test), a sample-ratio-mismatch check "+
			"against the configured split, and guardrail verdicts. --png draws the conversion rates with their intervals over time.", stderr)
	metric := fs.String("metric", "", "report: only this metric")
	png := fs.String("png", "", "report: also draw per-variant conversion rates with 95 % intervals over time into this PNG file")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	return dispatch("experiment", fs, []string{"env", "server", "token", "token-file", "json", "config"}, []verb{
		{name: "list", run: func([]string) error { return experimentList(ctx, c) }},
		{name: "report", args: []string{"FLAG"}, flags: []string{"metric", "png"}, run: func(a []string) error {
			return experimentReport(ctx, c, a[0], *metric, *png, stdout)
		}},
	}, pos)
}

func experimentList(ctx context.Context, c *client) error {
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/experiments"), nil, nil)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var out struct {
			Experiments []struct {
				Flag    string `json:"flag"`
				Defined bool   `json:"defined"`
				Units   uint64 `json:"units"`
				Verdict string `json:"verdict"`
			} `json:"experiments"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("experiment list: unexpected answer: %w", err)
		}
		if len(out.Experiments) == 0 {
			_, err := fmt.Fprintf(w, "no experiments in %s\n", c.env)
			return err
		}
		t := newTable(w, "flag", "units", "verdict")
		for _, e := range out.Experiments {
			t.row(e.Flag, e.Units, e.Verdict)
		}
		return t.flush()
	})
}

func experimentReport(ctx context.Context, c *client, flag, metric, png string, stdout io.Writer) error {
	q := url.Values{}
	if metric != "" {
		q.Set("metric", metric)
	}
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/experiments/"+url.PathEscape(flag)), nil, q)
	if err != nil {
		return err
	}
	var rep experiment.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("experiment report: unexpected answer: %w", err)
	}
	if png != "" {
		if err := drawExperiment(&rep, png); err != nil {
			return err
		}
	}
	return c.emit(raw, func(w io.Writer) error { return writeExperimentReport(w, &rep, png) })
}

// writeExperimentReport is the report for people.
func writeExperimentReport(w io.Writer, rep *experiment.Report, png string) error {
	fmt.Fprintf(w, "experiment %s in %s (control: %s)\n", rep.Flag, rep.Env, rep.Control)
	fmt.Fprintf(w, "verdict: %s\n", rep.Verdict)
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	srm := "ok"
	if rep.SRM.Mismatch {
		srm = "MISMATCH"
	}
	fmt.Fprintf(w, "sample ratio: %s (χ² %s, p %s)\n\n", srm, num(rep.SRM.ChiSquare, 2), pval(rep.SRM.P))
	t := newTable(w, "variant", "units", "expected", "observed")
	for _, v := range rep.Variants {
		name := v.Variant
		if v.Control {
			name += " (control)"
		}
		t.row(name, v.Units, pct(v.Expected), pct(v.Observed))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, m := range rep.Metrics {
		kind := ""
		if m.Guardrail {
			kind = ", guardrail"
		}
		fmt.Fprintf(w, "\nmetric %s (%s is better%s)\n", m.Key, m.Better, kind)
		t := newTable(w, "variant", "units", "converted", "rate [95% CI]", "lift [95% CI]", "p", "mean value [95% CI]", "outcome")
		for _, v := range m.Variants {
			lift, p, outcome := "-", "-", "control"
			if v.VsControl != nil {
				lift = fmt.Sprintf("%s [%s, %s]", signedPct(v.VsControl.Conversion.Lift.Estimate), signedPct(v.VsControl.Conversion.Lift.Low), signedPct(v.VsControl.Conversion.Lift.High))
				p, outcome = pval(v.VsControl.Conversion.P), v.VsControl.Outcome
			}
			mean := "-"
			if v.Mean != nil {
				mean = fmt.Sprintf("%s [%s, %s]", num(v.Mean.Estimate, 3), num(v.Mean.Low, 3), num(v.Mean.High, 3))
			}
			t.row(v.Variant, v.Units, v.Converted, fmt.Sprintf("%s [%s, %s]", pct(v.Rate.Estimate), pct(v.Rate.Low), pct(v.Rate.High)), lift, p, mean, outcome)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if png != "" {
		fmt.Fprintf(w, "\npicture: %s\n", png)
	}
	return nil
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*x)
}

func signedPct(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%+.1f%%", 100*x)
}

func num(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

func pval(p float64) string {
	switch {
	case math.IsNaN(p):
		return "-"
	case p < 0.0001:
		return "<0.0001"
	}
	return fmt.Sprintf("%.4f", p)
}

// drawExperiment draws each variant's cumulative conversion rate over time
// with its 95 % interval as thin lines around it (first metric, or the one
// asked for).
func drawExperiment(rep *experiment.Report, path string) error {
	if len(rep.Metrics) == 0 {
		return fmt.Errorf("--png: the experiment has no metric to draw")
	}
	metric := rep.Metrics[0].Key
	if len(rep.Series) == 0 {
		return fmt.Errorf("--png: no data over time yet for %s", rep.Flag)
	}
	t0 := rep.Series[0].Hour
	lines := map[string]*[3]bench.Line{}
	for _, p := range rep.Series {
		x := p.Hour.Sub(t0).Hours()
		for v, iv := range p.Rates[metric] {
			l := lines[v]
			if l == nil {
				l = &[3]bench.Line{{Name: v}, {Name: v + " 95% low"}, {Name: v + " 95% high"}}
				lines[v] = l
			}
			for i, y := range []float64{iv.Estimate, iv.Low, iv.High} {
				if !math.IsNaN(y) {
					l[i].Xs = append(l[i].Xs, x)
					l[i].Ys = append(l[i].Ys, 100*y)
				}
			}
		}
	}
	names := make([]string, 0, len(lines))
	for v := range lines {
		names = append(names, v)
	}
	sort.Strings(names)
	ch := bench.LineChart{Title: fmt.Sprintf("%s: %s conversion by variant", rep.Flag, metric),
		Subtitle: strings.TrimSpace(fmt.Sprintf("%s, cumulative, with 95%% intervals; %s", rep.Env, shortVerdict(rep.Verdict))),
		XLabel:   "hours since " + t0.UTC().Format("2006-01-02 15:04Z"), YLabel: "conversion %"}
	for _, v := range names {
		ch.Lines = append(ch.Lines, lines[v][:]...)
	}
	if err := ch.WritePNG(path); err != nil {
		return fmt.Errorf("--png: %w", err)
	}
	return nil
}

func shortVerdict(v string) string {
	if len(v) > 90 {
		return v[:87] + "..."
	}
	return v
}
