package bench

import (
	"bufio"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

// Plot size in pixels: readable on a laptop screen and in a README.
const plotW, plotH = 960, 560

// WritePlots renders the report's four plots into dir (created if needed)
// and returns their paths: the latency percentile curve, throughput over
// time, p99 over time (both latency plots on a log axis) and the error
// rate over time, one line per target. A target with errors says so in
// every legend: a fast curve made of failures must not pass for a result.
func (r *Report) WritePlots(dir string) ([]string, error) {
	if len(r.Results) == 0 {
		return nil, fmt.Errorf("plots: no results to plot")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("plots: %w", err)
	}
	first := r.Results[0]
	shape := first.Mode + " loop"
	if first.Mode == "open" {
		shape = fmt.Sprintf("open loop at %.0f req/s", first.Rate)
	}
	shape += fmt.Sprintf(", %d connections; latency from intended send time (corrected for coordinated omission) in open loop", first.Connections)

	lat := &chart{
		title: "Latency by percentile: " + first.Scenario, subtitle: shape,
		xLabel: "percentile", yLabel: "latency (us, log)", yLog: true,
		xTicks: []tick{{0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}},
		xMax:   5,
	}
	thr := &chart{title: "Throughput: " + first.Scenario, subtitle: shape, xLabel: "seconds", yLabel: "requests/s"}
	p99 := &chart{title: "p99 latency over time: " + first.Scenario, subtitle: shape, xLabel: "seconds", yLabel: "p99 (us, log)", yLog: true}
	errs := &chart{title: "Errors over time: " + first.Scenario, subtitle: shape, xLabel: "seconds", yLabel: "errors (% of requests)"}
	for _, res := range r.Results {
		var ls, ts, ps, es series
		name := res.Label
		if res.Errors > 0 || res.Requests == 0 {
			name = fmt.Sprintf("%s (%s errors)", res.Label, fmtPercent(res.errorShare()))
		}
		ls.name, ts.name, ps.name, es.name = name, name, name, name
		for _, p := range res.Percentiles {
			if p.Percentile >= 100 {
				continue // 1/(1-p) is infinite; the max is in the table
			}
			ls.xs = append(ls.xs, nines(p.Percentile))
			ls.ys = append(ls.ys, p.Micros)
		}
		for _, p := range res.Timeline {
			ts.xs, ts.ys = append(ts.xs, p.Second), append(ts.ys, p.Throughput)
			ps.xs, ps.ys = append(ps.xs, p.Second), append(ps.ys, p.P99)
			share := 0.0
			if p.Requests > 0 {
				share = 100 * float64(p.Errors) / float64(p.Requests)
			}
			es.xs, es.ys = append(es.xs, p.Second), append(es.ys, share)
		}
		lat.series, thr.series, p99.series = append(lat.series, ls), append(thr.series, ts), append(p99.series, ps)
		errs.series = append(errs.series, es)
	}
	var paths []string
	for _, c := range []struct {
		name  string
		chart *chart
	}{{"latency", lat}, {"throughput", thr}, {"p99", p99}, {"errors", errs}} {
		path := filepath.Join(dir, fmt.Sprintf("%s-%s.png", first.Scenario, c.name))
		if err := writePNG(path, c.chart); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// nines maps a percentile to "how many nines": 90 → 1, 99 → 2, 99.9 → 3,
// the x axis on which tail latency is visible at all.
func nines(p float64) float64 { return -math.Log10(1 - p/100) }

func writePNG(path string, c *chart) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	bw := bufio.NewWriter(f)
	err = png.Encode(bw, c.render(plotW, plotH))
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("plots: write %s: %w", path, err)
	}
	return nil
}
