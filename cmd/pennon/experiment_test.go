package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/internal/checkfor"
)

// An app calls a real sidecar of a real control plane: every unit is
// evaluated, and a deterministic 20 % of control units and 22 % of
// treatment units buy (a true relative lift of 10 %). The report shows
// that lift inside its interval and no sample-ratio mismatch; an
// experiment whose targeting deliberately splits 60/40 while its
// definition expects 50/50 is flagged as broken.
func TestExperimentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("sends ~8,500 requests through a sidecar")
	}
	ctx := context.Background()
	rs, err := startServer(ctx, serverOptions{addr: "127.0.0.1:0", data: t.TempDir(), natsAddr: "127.0.0.1:0", replicas: 1, snapshotEvery: 20,
		envs: []string{"dev"}, heartbeat: 200 * time.Millisecond}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	admin, _, err := rs.Tokens.Create(ctx, "admin", map[string]string{"*": "admin"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	api := "http://" + rs.API.Addr()
	put := func(key, def string, base uint64) {
		t.Helper()
		body := `{"definition":` + def + `,"baseVersion":` + fmt.Sprint(base) + `,"reason":"experiment test"}`
		req, _ := http.NewRequest("PUT", api+"/api/v1/envs/dev/flags/"+key, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("put %s: %d %s", key, resp.StatusCode, b)
		}
	}
	put("checkout-exp", `{"state":"ENABLED","variants":{"new":true,"old":false},"defaultVariant":"old",
		"targeting":{"fractional":[["new",50],["old",50]]},
		"experiment":{"control":"old","metrics":[{"key":"purchase"}]}}`, 0)
	put("skewed-exp", `{"state":"ENABLED","variants":{"new":true,"old":false},"defaultVariant":"old",
		"targeting":{"fractional":[["new",60],["old",40]]},
		"experiment":{"control":"old","split":{"new":50,"old":50},"metrics":[{"key":"purchase"}]}}`, 0)

	viewer, _, err := rs.Tokens.Create(ctx, "sidecar", map[string]string{"dev": "viewer"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopSidecar := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveSidecar(sctx, sidecarOptions{addr: "127.0.0.1:0", env: "dev", server: api, natsURL: rs.NATSURL, token: viewer,
			stateDir: t.TempDir(), poll: time.Second, reload: time.Second, drain: time.Second, maxBody: 1 << 16, cacheMB: 16,
			overloadInFlight: 256, experimentUnits: experiment.DefaultMaxUnits}, zap.NewNop(), ready)
	}()
	sidecar := "http://" + <-ready
	checkfor.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		_, err := evalVariant(sidecar, "skewed-exp", "probe")
		return err
	})

	converts := func(unit, variant string) bool {
		sum := sha256.Sum256([]byte("buy:" + unit))
		rate := uint32(200)
		if variant == "new" {
			rate = 220
		}
		return binary.BigEndian.Uint32(sum[:4])%1000 < rate
	}
	simulate := func(flag string, units int) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < units; i += 8 {
					unit := fmt.Sprintf("%s-u%d", flag, i)
					v, err := evalVariant(sidecar, flag, unit)
					if err != nil {
						errs <- err
						return
					}
					if converts(unit, v) {
						if err := track(sidecar, "purchase", unit, 10); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	simulate("checkout-exp", 6000)
	simulate("skewed-exp", 1200)
	// Graceful shutdown delivers what the sidecar aggregated.
	stopSidecar()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var rep experiment.Report
	checkfor.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		rep = experiment.Report{}
		if err := getJSON(api+"/api/v1/envs/dev/experiments/checkout-exp", admin, &rep); err != nil {
			return err
		}
		if n := rep.Variants[0].Units + rep.Variants[1].Units; n != 6000 {
			return fmt.Errorf("%d units reported, want 6000", n)
		}
		return nil
	})
	// The batches went over NATS (the sidecar's own subject, acknowledged
	// on its own inbox), not the API fallback.
	mresp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `pennon_telemetry_received_total{kind="experiments",via="nats"}`) {
		t.Fatalf("no experiment batch arrived over NATS:\n%s", grepLines(string(metrics), "pennon_telemetry"))
	}
	if rep.SRM.Mismatch {
		t.Fatalf("50/50 experiment flagged as mismatched: %+v", rep.SRM)
	}
	m := rep.Metrics[0]
	newV := m.Variants[0]
	if newV.Variant != "new" || newV.VsControl == nil {
		t.Fatalf("metric variants %+v", m.Variants)
	}
	lift := newV.VsControl.Conversion.Lift
	t.Logf("new %.4f vs old %.4f: lift %+.3f [%+.3f, %+.3f], p %.3g", newV.Rate.Estimate, m.Variants[1].Rate.Estimate, lift.Estimate, lift.Low, lift.High, newV.VsControl.Conversion.P)
	if !lift.Contains(0.10) || lift.Estimate < 0.02 || lift.Estimate > 0.2 {
		t.Fatalf("lift %+v does not contain the true +10%%", lift)
	}
	if newV.Mean == nil || newV.Mean.Estimate != 10 {
		t.Fatalf("mean value %+v, want 10", newV.Mean)
	}
	var skewed experiment.Report
	if err := getJSON(api+"/api/v1/envs/dev/experiments/skewed-exp", admin, &skewed); err != nil {
		t.Fatal(err)
	}
	if !skewed.SRM.Mismatch || !strings.HasPrefix(skewed.Verdict, "BROKEN: sample ratio mismatch") {
		t.Fatalf("skewed experiment not flagged: %+v %q", skewed.SRM, skewed.Verdict)
	}

	// The CLI shows the same, and draws it.
	png := filepath.Join(t.TempDir(), "exp.png")
	code, out, errOut := runCLI("experiment", "report", "checkout-exp", "--env", "dev", "--server", api, "--token", admin, "--png", png)
	t.Logf("pennon experiment report:\n%s", out)
	if code != 0 || !strings.Contains(out, "verdict: ") || !strings.Contains(out, "sample ratio: ok") || !strings.Contains(out, "old (control)") {
		t.Fatalf("experiment report: exit %d\n%s\n%s", code, out, errOut)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Fatalf("picture: %v", err)
	}
	code, out, _ = runCLI("experiment", "report", "skewed-exp", "--env", "dev", "--server", api, "--token", admin)
	if code != 0 || !strings.Contains(out, "sample ratio: MISMATCH") {
		t.Fatalf("skewed report: %d\n%s", code, out)
	}
	code, out, _ = runCLI("experiment", "list", "--env", "dev", "--server", api, "--token", admin, "--json")
	if code != 0 || !strings.Contains(out, `"flag": "checkout-exp"`) || !strings.Contains(out, `"units": 6000`) {
		t.Fatalf("experiment list: %d\n%s", code, out)
	}
	if code, _, errOut := runCLI("experiment", "report", "--env", "dev", "--server", api, "--token", admin); code != 2 || !strings.Contains(errOut, "needs FLAG") {
		t.Fatalf("report without a flag: %d %s", code, errOut)
	}
}

func evalVariant(base, flag, unit string) (string, error) {
	resp, err := http.Post(base+"/ofrep/v1/evaluate/flags/"+flag, "application/json", strings.NewReader(`{"context":{"targetingKey":"`+unit+`"}}`))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Variant string `json:"variant"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || out.Variant == "" {
		return "", fmt.Errorf("evaluate %s: %d %s", flag, resp.StatusCode, b)
	}
	return out.Variant, nil
}

func track(base, event, unit string, value float64) error {
	body := fmt.Sprintf(`{"key":%q,"context":{"targetingKey":%q},"details":{"value":%g}}`, event, unit, value)
	resp, err := http.Post(base+"/v1/track", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 || !strings.Contains(string(b), `"joined":true`) {
		return fmt.Errorf("track: %d %s", resp.StatusCode, b)
	}
	return nil
}

func getJSON(url, token string, v any) error {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
