package fleet

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFleetSmall runs every scenario with 20 sidecars against a real
// 3-node NATS cluster and two control planes, with sidecar timing scaled
// down so the whole run stays around 20 s. The big runs (`pennon bench
// fleet --sidecars 2000`) are on demand, never in go test.
func TestFleetSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	sidecars := 20
	if raceEnabled {
		sidecars = 8
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var progress strings.Builder
	o := Options{
		Sidecars: sidecars, Flags: 10,
		SteadyCommits: 3, SteadyEvery: 200 * time.Millisecond,
		Outage:      1500 * time.Millisecond,
		KillCommits: 12, KillEvery: 100 * time.Millisecond,
		BurstCommits: 20,
		Heartbeat:    100 * time.Millisecond,
		PollInterval: 300 * time.Millisecond, ReconcileEvery: 5 * time.Second,
		SilenceAfter: 500 * time.Millisecond, LeaseFor: 500 * time.Millisecond,
		ConvergeTimeout: 20 * time.Second,
		Progress:        &progress,
	}
	if raceEnabled {
		// Same scenarios, fewer sidecars and commits, thresholds a slowed
		// process can meet.
		o.BurstCommits, o.KillCommits = 10, 9
		o.Heartbeat, o.SilenceAfter, o.LeaseFor, o.Outage = 250*time.Millisecond, 2*time.Second, 2*time.Second, 3*time.Second
	}
	res, err := Run(ctx, o)
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Startup.NotConverged != 0 || res.Startup.NotInPush != 0 || res.Startup.RequestsPerSidecar < 1 || res.Startup.HeapPerSidecarBytes <= 0 {
		t.Errorf("start-up: %+v", res.Startup)
	}
	byName := map[string]*ScenarioResult{}
	for _, s := range res.Scenarios {
		byName[s.Name] = s
	}
	for _, tc := range []struct {
		name       string
		minAcked   int
		wantFailed bool // may some commits fail (node loss)?
	}{
		{ScenarioSteady, 3, false},
		{ScenarioRestart, 1, false},
		{ScenarioKill, o.KillCommits * 2 / 3, true},
		{ScenarioBurst, o.BurstCommits, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := byName[tc.name]
			if s == nil {
				t.Fatalf("scenario %s missing from the result", tc.name)
			}
			t.Log(s.Summary())
			if s.Acked < tc.minAcked || (!tc.wantFailed && s.Failed != 0) {
				t.Errorf("acked %d of %d (failed %d, first error %q), want at least %d acked", s.Acked, s.Commits, s.Failed, s.FirstError, tc.minAcked)
			}
			// Every acknowledged commit reached every sidecar.
			if s.Samples != s.Acked*sidecars || s.Missing != 0 {
				t.Errorf("samples %d (missing %d), want %d", s.Samples, s.Missing, s.Acked*sidecars)
			}
			// Every sidecar serves the head, and is back on push: a node
			// loss or a control-plane restart must not leave anyone polling.
			if s.NotConverged != 0 || s.ConvergeMs <= 0 || s.NotInPush != 0 || s.AllPushMs < s.ConvergeMs {
				t.Errorf("converged in %.0f ms with %d sidecars behind; all in push after %.0f ms with %d not", s.ConvergeMs, s.NotConverged, s.AllPushMs, s.NotInPush)
			}
			if !(0 < s.P50Ms && s.P50Ms <= s.P99Ms && s.P99Ms <= s.MaxMs) {
				t.Errorf("implausible delays p50 %.2f p99 %.2f max %.2f", s.P50Ms, s.P99Ms, s.MaxMs)
			}
			if len(s.Timeline) == 0 || len(s.PerCommit) != s.Acked {
				t.Errorf("timeline %d points, per-commit %d (acked %d)", len(s.Timeline), len(s.PerCommit), s.Acked)
			}
		})
	}
	if k := byName[ScenarioKill]; k != nil {
		if k.KilledNode == "" || len(k.LostAcked) != 0 {
			t.Errorf("kill: node %q, lost acknowledged versions %v", k.KilledNode, k.LostAcked)
		}
	}
	if r := byName[ScenarioRestart]; r != nil {
		// Sidecars noticed the outage, then came back asking the control
		// planes for something (credentials, snapshot, keys).
		if r.AllLeftPushMs <= 0 || r.RequestsPerSidecarAfterRestart <= 0 || r.Requests == 0 {
			t.Errorf("restart: all left push after %.0f ms, %.2f requests/sidecar after restart, %d requests", r.AllLeftPushMs, r.RequestsPerSidecarAfterRestart, r.Requests)
		}
		if r.Routes["/api/v1/envs/{env}/snapshot"] == 0 {
			t.Errorf("restart: no snapshot requests counted; routes %s", RouteSummary(r.Routes))
		}
	}

	// The JSON round-trips and the plots are real PNGs.
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "fleet.json")
	if err := res.WriteJSON(jsonPath); err != nil {
		t.Fatal(err)
	}
	var back Result
	b, _ := os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &back); err != nil || back.Sidecars != sidecars || len(back.Scenarios) != 4 {
		t.Fatalf("JSON round trip: %v, %d sidecars, %d scenarios", err, back.Sidecars, len(back.Scenarios))
	}
	paths, err := res.WritePlots(filepath.Join(dir, "plots"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 12 {
		t.Fatalf("%d plots, want 12: %v", len(paths), paths)
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Fatalf("%s: not a usable PNG: %v", p, err)
		}
	}
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil || !strings.Contains(table.String(), "burst") {
		t.Fatalf("table: %v\n%s", err, table.String())
	}
}

// TestOptionsRejectUnknownScenario checks the error names the field and
// the allowed values.
func TestOptionsRejectUnknownScenario(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Scenarios: []string{"steady", "chaos"}}, `scenarios: unknown "chaos" (allowed: steady, restart, kill, burst)`},
		{Options{NATSNodes: 1}, "nats nodes: 1 cannot carry R3 streams; use 3 or more"},
	} {
		_, err := Run(context.Background(), tc.o)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Run(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
