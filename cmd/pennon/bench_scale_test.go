package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/bench"
)

// runAsPennonEnv makes this test binary behave as the pennon executable
// (TestMain): `bench scale --process` starts it as a sidecar.
const runAsPennonEnv = "PENNON_TEST_RUN_AS_PENNON"

func TestMain(m *testing.M) {
	if os.Getenv(runAsPennonEnv) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// TestBenchScaleProcess runs `pennon bench scale` with --process on small
// sets: each size is loaded by a real sidecar process (this binary), which
// must become ready, serve the load without errors and report its memory.
func TestBenchScaleProcess(t *testing.T) {
	old := scaleProcessEnv
	scaleProcessEnv = []string{runAsPennonEnv + "=1"}
	t.Cleanup(func() { scaleProcessEnv = old })
	jsonFile := filepath.Join(t.TempDir(), "scale.json")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "scale", "--sizes", "20,300", "--updates", "1", "--load-duration", "300ms",
		"--connections", "2", "--json", jsonFile}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "the same sets in a `pennon sidecar` process:") {
		t.Errorf("stdout has no process table:\n%s", out.String())
	}
	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var res []bench.ScaleResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("want 2 sizes, got %s", data)
	}
	for _, r := range res {
		p := r.Process
		if p == nil {
			t.Fatalf("%d flags: no process result in %s", r.Flags, data)
		}
		// A Go process serving HTTP holds megabytes; a zero or a few
		// kilobytes would mean /proc was read for the wrong process.
		if p.ReadyMs <= 0 || p.RSSMB < 5 || p.PeakMB < p.RSSMB || p.SingleRPS <= 0 {
			t.Errorf("%d flags: implausible process result %+v", r.Flags, *p)
		}
	}
}
