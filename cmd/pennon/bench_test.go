package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pennon-dev/pennon/bench"
)

func TestBenchCommandBare(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "r.json")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--target", "bare,pennon", "--scenario", "targeting",
		"--requests", "200", "--warmup", "0s", "--connections", "2", "--json", jsonFile, "--plot-dir", dir}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "targeting") || !strings.Contains(out.String(), "plots: ") {
		t.Errorf("stdout:\n%s", out.String())
	}
	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || rep.Results[0].Requests != 200 || rep.Schema != bench.SchemaVersion {
		t.Fatalf("report: %s", data)
	}
	if rep.Results[1].Label != "pennon" {
		t.Errorf("labels %s, %s", rep.Results[0].Label, rep.Results[1].Label)
	}
	for _, f := range []string{"targeting-latency.png", "targeting-throughput.png", "targeting-p99.png", "targeting-errors.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestBenchCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown target", []string{"bench", "--target", "nope"}, `target: unknown "nope" (allowed: url, bare, pennon, pennon-nocache, or LABEL=URL)`},
		{"empty label", []string{"bench", "--target", "=http://127.0.0.1:1"}, `want LABEL=URL`},
		{"labelled remote", []string{"bench", "--target", "peer=http://192.0.2.7:8016", "--requests", "1"}, "not a loopback address"},
		{"unknown scenario", []string{"bench", "--scenario", "nope"}, `scenario: unknown "nope"`},
		{"no bound", []string{"bench", "--target", "bare", "--duration", "0"}, "set at least one bound"},
		{"remote", []string{"bench", "--url", "http://192.0.2.7:8016", "--requests", "1"}, "not a loopback address"},
		{"scale sizes", []string{"bench", "scale", "--sizes", "10,abc"}, `sizes: "abc" is not a flag count`},
		{"propagation sidecars", []string{"bench", "propagation", "--sidecars", "0"}, `sidecars: "0" is not a sidecar count`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut); code == 0 {
				t.Fatalf("exit 0, want failure")
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), tc.want)
			}
		})
	}
}

func TestBenchPropagationCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "propagation", "--sidecars", "2", "--changes", "5",
		"--sync-always=false", "--json", filepath.Join(dir, "p.json")}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "all-sidecars p99") || !strings.Contains(out.String(), "after commit p99") {
		t.Errorf("stdout:\n%s", out.String())
	}
	data, err := os.ReadFile(filepath.Join(dir, "p.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res []struct {
		Sidecars int `json:"sidecars"`
		Samples  int `json:"samples"`
	}
	if err := json.Unmarshal(data, &res); err != nil || len(res) != 1 || res[0].Samples != 10 {
		t.Fatalf("json %s: %v", data, err)
	}
}

// TestBenchLabelledURL: LABEL=URL targets load any server under a name,
// side by side with the in-process ones.
func TestBenchLabelledURL(t *testing.T) {
	peer, err := bench.StartBare()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--target", "peer=" + peer.URL + ",bare", "--requests", "100",
		"--warmup", "0s", "--connections", "2", "--quiet"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(strings.TrimSpace(lines[1]), "peer ") {
		t.Errorf("table:\n%s", out.String())
	}
}

// TestBenchMaxErrorRate: a target failing one request in ten passes the
// bench only when the threshold allows 10 %; the report shows the errors
// either way, and the plots include the error rate.
func TestBenchMaxErrorRate(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			http.Error(w, `{"errorCode":"GENERAL"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"key":"f","value":true,"reason":"STATIC","variant":"on"}`)
	}))
	defer srv.Close()
	tests := []struct {
		name     string
		extra    []string
		code     int
		inStderr string
	}{
		{"default 1%", nil, 1, "flaky: 10% of 200 requests failed (20 errors; --max-error-rate 1%)"},
		{"fraction", []string{"--max-error-rate", "0.05"}, 1, "--max-error-rate 5%"},
		{"allowed", []string{"--max-error-rate", "10%"}, 0, ""},
		{"bad value", []string{"--max-error-rate", "150%"}, 2, "want a share between 0% and 100%"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n.Store(0)
			dir := t.TempDir()
			args := append([]string{"bench", "--target", "flaky=" + srv.URL, "--requests", "200", "--warmup", "0s",
				"--connections", "1", "--quiet"}, tc.extra...)
			if tc.code == 0 {
				args = append(args, "--plot-dir", dir) // rendering is slow under -race: once
			}
			var out, errOut bytes.Buffer
			code := run(context.Background(), args, &out, &errOut)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.inStderr) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), tc.inStderr)
			}
			if tc.code == 2 {
				return
			}
			// The table has the error share, and the first error below it.
			if !regexp.MustCompile(`flaky\s+static\s+closed\s+1\s+200\s+20\s+10%`).MatchString(out.String()) ||
				!strings.Contains(out.String(), "flaky: 20 errors, first: HTTP 500") {
				t.Errorf("report does not show the errors:\n%s", out.String())
			}
			if tc.code == 0 {
				if _, err := os.Stat(filepath.Join(dir, "static-errors.png")); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
