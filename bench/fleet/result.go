package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pennon-dev/pennon/bench"
)

// Result is one run: the setup, the fleet's start-up cost and every
// scenario. Durations are milliseconds (…Ms) or seconds (…S).
type Result struct {
	Command       string    `json:"command,omitempty"` // how it was run, set by the caller
	Started       time.Time `json:"started"`
	Sidecars      int       `json:"sidecars"`
	NATSNodes     int       `json:"natsNodes"`
	ControlPlanes int       `json:"controlPlanes"`
	Flags         int       `json:"flags"`
	GOMAXPROCS    int       `json:"gomaxprocs"`
	NumCPU        int       `json:"numCPU"`
	GoVersion     string    `json:"goVersion"`
	// Timing the sidecars and control planes ran with.
	Heartbeat      string `json:"heartbeat"`
	PollInterval   string `json:"pollInterval"`
	ReconcileEvery string `json:"reconcileEvery"`
	SilenceAfter   string `json:"silenceAfter"`
	LeaseFor       string `json:"leaseFor"`

	Startup   StartupResult     `json:"startup"`
	Scenarios []*ScenarioResult `json:"scenarios"`
}

// StartupResult is the cost of bringing the fleet up.
type StartupResult struct {
	// DurationMs: first sidecar started → every sidecar serving the head
	// (includes the StartRate ramp); AllPushMs: → every sidecar serving it
	// over push; NotInPush had not when the wait timed out.
	DurationMs         float64          `json:"durationMs"`
	NotConverged       int              `json:"notConverged"`
	AllPushMs          float64          `json:"allPushMs"`
	NotInPush          int              `json:"notInPush"`
	Requests           int64            `json:"requests"`
	Errors             int64            `json:"errors"`
	RequestsPerSidecar float64          `json:"requestsPerSidecar"`
	Routes             map[string]int64 `json:"routes"`
	CPUSeconds         float64          `json:"cpuSeconds"`
	// Live heap after GC before and after the fleet started; the delta per
	// sidecar includes the NATS servers' per-connection state (they run in
	// this process), so it is an upper bound for the sidecar's own sync
	// state.
	HeapBeforeBytes      uint64  `json:"heapBeforeBytes"`
	HeapAfterBytes       uint64  `json:"heapAfterBytes"`
	HeapPerSidecarBytes  float64 `json:"heapPerSidecarBytes"`
	GoroutinesPerSidecar float64 `json:"goroutinesPerSidecar"`
}

// ScenarioResult is one scenario's figures.
type ScenarioResult struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	DurationS   float64 `json:"durationS"`

	Commits    int    `json:"commits"`
	Acked      int    `json:"acked"`
	Failed     int    `json:"failed"` // not acknowledged (timed out during a failover, …)
	FirstError string `json:"firstError,omitempty"`

	// Commit → applied over every (acknowledged commit, sidecar) pair,
	// from the start of the Commit call to the version being served.
	Samples          int     `json:"samples"`
	Missing          int     `json:"missing"` // pairs never applied (a sidecar skipped to a later version counts as applied then)
	P50Ms            float64 `json:"p50Ms"`
	P99Ms            float64 `json:"p99Ms"`
	MaxMs            float64 `json:"maxMs"`
	AllSidecarsP99Ms float64 `json:"allSidecarsP99Ms"` // p99 over commits of the last sidecar to apply it
	CommitP50Ms      float64 `json:"commitP50Ms"`      // the Commit call itself (JetStream R3 ack)
	CommitMaxMs      float64 `json:"commitMaxMs"`

	// ConvergeMs: from ConvergedFrom until every sidecar served the head;
	// AllPushMs: until every sidecar served it over push. NotConverged and
	// NotInPush sidecars had not when the wait timed out.
	ConvergeMs    float64 `json:"convergeMs"`
	AllPushMs     float64 `json:"allPushMs"`
	ConvergedFrom string  `json:"convergedFrom"`
	NotConverged  int     `json:"notConverged"`
	NotInPush     int     `json:"notInPush"`

	// Control-plane load over the scenario (both replicas).
	Requests                 int64            `json:"requests"`
	Errors                   int64            `json:"errors"`
	Routes                   map[string]int64 `json:"routes"` // by route; "route status" keys count answers ≥ 400
	RequestsPerSidecarPerMin float64          `json:"requestsPerSidecarPerMin"`
	PeakRequestsPerS         float64          `json:"peakRequestsPerS"`
	ControlBusyS             float64          `json:"controlBusyS"` // summed handler wall time
	Reports                  int64            `json:"reports"`      // sidecar reports over NATS
	ReportsPerSidecarPerMin  float64          `json:"reportsPerSidecarPerMin"`
	// Process CPU (NATS cluster + control planes + fleet, one process).
	CPUSeconds float64 `json:"cpuSeconds"`
	CPUCores   float64 `json:"cpuCores"`
	// CPUMsPerApply is process CPU / (acknowledged commits × sidecars): an
	// upper bound on what applying one pushed changeset costs one sidecar
	// (verify, apply, compile, report), which a real sidecar pays on its
	// own core but the simulation pays on the shared ones.
	CPUMsPerApply float64 `json:"cpuMsPerApply"`

	// restart
	AllLeftPushMs                  float64 `json:"allLeftPushMs,omitempty"` // outage start → no sidecar in push
	RestartMs                      float64 `json:"restartMs,omitempty"`     // replicas starting (store, audit catch-up, listen)
	RequestsPerSidecarAfterRestart float64 `json:"requestsPerSidecarAfterRestart,omitempty"`
	// kill
	KilledNode string   `json:"killedNode,omitempty"`
	KilledAtS  float64  `json:"killedAtS,omitempty"`
	LostAcked  []uint64 `json:"lostAcked,omitempty"` // acknowledged versions missing or changed afterwards
	LeftPush   int      `json:"leftPush,omitempty"`  // sidecars that fell back to polling at least once
	// burst
	BurstMs float64 `json:"burstMs,omitempty"`

	PerCommit []CommitPoint `json:"perCommit"`
	Timeline  []Point       `json:"timeline"`
}

// CommitPoint is one commit's delays across the fleet.
type CommitPoint struct {
	Version  uint64  `json:"version"`
	T        float64 `json:"t"` // seconds since the scenario started
	CommitMs float64 `json:"commitMs"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
	MaxMs    float64 `json:"maxMs"`
}

// Point is the fleet at one instant of a scenario.
type Point struct {
	T            float64 `json:"t"`
	Head         uint64  `json:"head"`
	Push         int     `json:"push"`
	Polling      int     `json:"polling"`
	Other        int     `json:"other"`
	AtHead       int     `json:"atHead"`
	RequestsPerS float64 `json:"requestsPerS"`
	ReportsPerS  float64 `json:"reportsPerS"`
}

// Summary is one line for progress output.
func (s *ScenarioResult) Summary() string {
	line := fmt.Sprintf("%s: %d/%d commits acked, commit→applied p50 %.1f ms p99 %.1f ms max %.1f ms, converged in %.2f s (%d not), all in push after %.2f s (%d not), %.2f control-plane requests/sidecar/min, peak %.0f req/s",
		s.Name, s.Acked, s.Commits, s.P50Ms, s.P99Ms, s.MaxMs, s.ConvergeMs/1000, s.NotConverged, s.AllPushMs/1000, s.NotInPush, s.RequestsPerSidecarPerMin, s.PeakRequestsPerS)
	if s.KilledNode != "" {
		line += fmt.Sprintf(", node %s killed: %d acked lost, %d sidecars fell back to polling", s.KilledNode, len(s.LostAcked), s.LeftPush)
	}
	return line
}

// WriteTable prints the run as a table.
func (r *Result) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "%d sidecars, %d NATS nodes (R3), %d control planes, %d flags; GOMAXPROCS %d\n",
		r.Sidecars, r.NATSNodes, r.ControlPlanes, r.Flags+1, r.GOMAXPROCS)
	fmt.Fprintf(w, "start-up: %.1f s to all at head, %.1f s to all in push, %.1f requests/sidecar, heap %.1f KiB/sidecar, %.1f goroutines/sidecar\n",
		r.Startup.DurationMs/1000, r.Startup.AllPushMs/1000, r.Startup.RequestsPerSidecar, r.Startup.HeapPerSidecarBytes/1024, r.Startup.GoroutinesPerSidecar)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tacked/commits\tp50 ms\tp99 ms\tmax ms\tconverge s\tall push s\treq/sidecar/min\tpeak req/s\tCPU cores\t")
	for _, s := range r.Scenarios {
		fmt.Fprintf(tw, "%s\t%d/%d\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t\n", s.Name, s.Acked, s.Commits,
			s.P50Ms, s.P99Ms, s.MaxMs, s.ConvergeMs/1000, s.AllPushMs/1000, s.RequestsPerSidecarPerMin, s.PeakRequestsPerS, s.CPUCores)
	}
	return tw.Flush()
}

// WriteJSON writes the result, indented, to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}

// WritePlots renders three plots per scenario into dir: commit → applied
// per commit (p50, p99, max across the fleet), the fleet's sync states
// over time, and control-plane requests and sidecar reports per second.
func (r *Result) WritePlots(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("plots: %w", err)
	}
	shape := fmt.Sprintf("%d sidecars, %d-node NATS cluster (R3), %d control planes, one 2-core machine", r.Sidecars, r.NATSNodes, r.ControlPlanes)
	var paths []string
	write := func(name string, c bench.LineChart) error {
		path := filepath.Join(dir, name)
		if err := c.WritePNG(path); err != nil {
			return err
		}
		paths = append(paths, path)
		return nil
	}
	for _, s := range r.Scenarios {
		sub := shape + "; " + s.Description
		var p50, p99, mx bench.Line
		p50.Name, p99.Name, mx.Name = "p50 over sidecars", "p99 over sidecars", "max over sidecars"
		for _, c := range s.PerCommit {
			p50.Xs, p50.Ys = append(p50.Xs, c.T), append(p50.Ys, c.P50Ms)
			p99.Xs, p99.Ys = append(p99.Xs, c.T), append(p99.Ys, c.P99Ms)
			mx.Xs, mx.Ys = append(mx.Xs, c.T), append(mx.Ys, c.MaxMs)
		}
		if err := write("fleet-"+s.Name+"-delay.png", bench.LineChart{Title: "Commit -> applied: " + s.Name, Subtitle: sub,
			XLabel: "commit time (s since scenario start)", YLabel: "delay (ms, log)", YLog: true, Lines: []bench.Line{p50, p99, mx}}); err != nil {
			return paths, err
		}
		var push, poll, head, req, rep bench.Line
		push.Name, poll.Name, head.Name = "sidecars in push", "sidecars polling", "sidecars at head"
		req.Name, rep.Name = "control-plane requests/s", "sidecar reports/s (NATS)"
		for _, p := range s.Timeline {
			push.Xs, push.Ys = append(push.Xs, p.T), append(push.Ys, float64(p.Push))
			poll.Xs, poll.Ys = append(poll.Xs, p.T), append(poll.Ys, float64(p.Polling))
			head.Xs, head.Ys = append(head.Xs, p.T), append(head.Ys, float64(p.AtHead))
			req.Xs, req.Ys = append(req.Xs, p.T), append(req.Ys, p.RequestsPerS)
			rep.Xs, rep.Ys = append(rep.Xs, p.T), append(rep.Ys, p.ReportsPerS)
		}
		if err := write("fleet-"+s.Name+"-states.png", bench.LineChart{Title: "Sync states: " + s.Name, Subtitle: sub,
			XLabel: "seconds since scenario start", YLabel: "sidecars", Lines: []bench.Line{push, poll, head}}); err != nil {
			return paths, err
		}
		if err := write("fleet-"+s.Name+"-requests.png", bench.LineChart{Title: "Control-plane load: " + s.Name, Subtitle: sub,
			XLabel: "seconds since scenario start", YLabel: "per second", Lines: []bench.Line{req, rep}}); err != nil {
			return paths, err
		}
	}
	sort.Strings(paths)
	return paths, nil
}

// RouteSummary lists routes by count, "route=count" joined by ", ".
func RouteSummary(routes map[string]int64) string {
	type rc struct {
		r string
		n int64
	}
	var list []rc
	for r, n := range routes {
		list = append(list, rc{r, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n || (list[i].n == list[j].n && list[i].r < list[j].r) })
	var parts []string
	for _, x := range list {
		parts = append(parts, fmt.Sprintf("%s=%d", x.r, x.n))
	}
	return strings.Join(parts, ", ")
}
