package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// SchemaVersion identifies the JSON report layout; bump it on incompatible change.
const SchemaVersion = "pennon-bench/v1"

// Report is everything one `pennon bench` invocation measured: one Result
// per target, same scenario and load shape, so they compare side by side.
type Report struct {
	Schema    string    `json:"schema"`
	Started   time.Time `json:"started"`
	GoVersion string    `json:"goVersion"`
	OS        string    `json:"os"`
	Arch      string    `json:"arch"`
	CPUs      int       `json:"cpus"`
	Results   []*Result `json:"results"`
}

// NewReport returns an empty report stamped with the machine it runs on.
func NewReport(started time.Time) *Report {
	return &Report{
		Schema: SchemaVersion, Started: started.UTC(), GoVersion: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Result is one run against one target. Latencies are in microseconds.
type Result struct {
	Label       string  `json:"label"`
	URL         string  `json:"url"`
	Scenario    string  `json:"scenario"`
	Mode        string  `json:"mode"` // "closed" or "open"
	Connections int     `json:"connections"`
	Rate        float64 `json:"rate,omitempty"` // requests/s asked for, open loop
	WarmupSec   float64 `json:"warmupSeconds"`
	ElapsedSec  float64 `json:"elapsedSeconds"` // measured phase
	Requests    int64   `json:"requests"`       // measured, including errors
	Errors      int64   `json:"errors"`
	// ErrorRate is Errors/Requests (1 when nothing was measured), the
	// figure `pennon bench --max-error-rate` checks.
	ErrorRate  float64 `json:"errorRate"`
	Throughput float64 `json:"throughput"` // requests/s over the measured phase
	// StatusCodes counts responses by HTTP status; "transport" counts
	// requests that got no response (timeout, refused, reset).
	StatusCodes map[string]int64  `json:"statusCodes"`
	FirstError  string            `json:"firstError,omitempty"`
	Latency     LatencySummary    `json:"latencyMicros"`
	Percentiles []PercentilePoint `json:"percentiles"`
	Timeline    []TimelinePoint   `json:"timeline"`

	hist *hdr.Histogram
}

// LatencySummary is the usual handful of figures, in microseconds.
type LatencySummary struct {
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99.9"`
	P9999 float64 `json:"p99.99"`
	Max   float64 `json:"max"`
}

// PercentilePoint is one point of the latency percentile curve.
type PercentilePoint struct {
	Percentile float64 `json:"percentile"`
	Micros     float64 `json:"micros"`
}

// TimelinePoint is one interval (about a second) of the measured phase.
type TimelinePoint struct {
	Second     float64 `json:"second"` // end of the interval, since measuring began
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50Micros"`
	P99        float64 `json:"p99Micros"`
}

// curvePercentiles are the points of the percentile curve: dense near the
// tail, where the interesting differences are.
var curvePercentiles = []float64{0, 10, 25, 50, 75, 80, 90, 95, 97.5, 99, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995, 99.999, 100}

// micros converts a histogram value (nanoseconds) to microseconds.
func micros(ns int64) float64 { return float64(ns) / 1e3 }

// summarise fills the latency fields from h (values in nanoseconds).
func (r *Result) summarise(h *hdr.Histogram) {
	r.hist = h
	if h.TotalCount() == 0 {
		r.Percentiles = []PercentilePoint{}
		return
	}
	r.Latency = LatencySummary{
		Min: micros(h.Min()), Mean: h.Mean() / 1e3,
		P50: micros(h.ValueAtPercentile(50)), P90: micros(h.ValueAtPercentile(90)),
		P99: micros(h.ValueAtPercentile(99)), P999: micros(h.ValueAtPercentile(99.9)),
		P9999: micros(h.ValueAtPercentile(99.99)), Max: micros(h.Max()),
	}
	r.Percentiles = make([]PercentilePoint, 0, len(curvePercentiles))
	for _, p := range curvePercentiles {
		r.Percentiles = append(r.Percentiles, PercentilePoint{Percentile: p, Micros: micros(h.ValueAtPercentile(p))})
	}
}

// errorShare is the share of measured requests that failed, 0 to 1. A run
// that measured no request at all counts as all errors: it showed nothing
// working.
func (r *Result) errorShare() float64 {
	if r.Requests <= 0 {
		return 1
	}
	return float64(r.Errors) / float64(r.Requests)
}

// ErrorRateError names every result whose error rate exceeds max (0 to 1),
// with its count, first error and status codes; nil when none does.
func (r *Report) ErrorRateError(max float64) error {
	var bad []string
	for _, res := range r.Results {
		if rate := res.errorShare(); rate > max {
			msg := fmt.Sprintf("%s: %s of %d requests failed (%d errors; --max-error-rate %s)", res.Label, fmtPercent(rate), res.Requests, res.Errors, fmtPercent(max))
			if res.FirstError != "" {
				msg += fmt.Sprintf("; first: %s; status codes %v", res.FirstError, res.StatusCodes)
			}
			bad = append(bad, msg)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("error rate above the threshold:\n  %s", strings.Join(bad, "\n  "))
}

// fmtPercent prints a share (0 to 1) as a percentage to three significant
// digits, enough to tell 0.004 % from 0.
func fmtPercent(v float64) string {
	s := strconv.FormatFloat(100*v, 'g', 3, 64)
	if strings.ContainsRune(s, 'e') {
		s = strconv.FormatFloat(100*v, 'f', 6, 64)
	}
	return s + "%"
}
