package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func runCLI(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"validate_valid", []string{"validate", "../../examples/checkout.json", "../../examples/basic.json"}, 0},
		{"validate_invalid", []string{"validate", "testdata/invalid.json"}, 1},
		{"eval_targeting", []string{"eval", "--file", "../../examples/checkout.json", "--flag", "payment-api-v2", "--context", `{"targetingKey":"u1","email":"ann@pennon.dev"}`}, 0},
		{"eval_prerequisite", []string{"eval", "--file", "../../examples/checkout.json", "--flag", "new-checkout-ui", "--context", `{"appVersion":"3.4.0","country":"US"}`}, 0},
		{"eval_missing", []string{"eval", "--file", "../../examples/basic.json", "--flag", "nope"}, 1},
		{"eval_targeting_json", []string{"eval", "--file", "../../examples/checkout.json", "--flag", "payment-api-v2", "--context", `{"targetingKey":"u1","email":"ann@pennon.dev"}`, "--json"}, 0},
		{"eval_missing_json", []string{"eval", "--file", "../../examples/basic.json", "--flag", "nope", "--json"}, 1},
		{"validate_json", []string{"validate", "--json", "../../examples/basic.json", "testdata/invalid.json", "testdata/nope.json"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			golden(t, tc.name, out)
		})
	}
}

func TestEvalUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no flag", []string{"eval", "--file", "../../examples/basic.json"}, "--file FILE and --flag KEY are required"},
		{"stray argument", []string{"eval", "--file", "../../examples/basic.json", "--flag", "dark-mode", "extra"}, `unexpected argument "extra"`},
		{"validate without file", []string{"validate", "--json"}, "which file?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, errOut, tc.want)
			}
		})
	}
}

func TestEvalBadContext(t *testing.T) {
	code, _, errOut := runCLI("eval", "--file", "../../examples/basic.json", "--flag", "dark-mode", "--context", `{"a":`)
	if code != 1 || !strings.Contains(errOut, "--context: invalid JSON") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestSidecarCommandServesAndStops(t *testing.T) {
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := sidecarOptions{addr: "127.0.0.1:0", file: "../../examples/checkout.json", reload: 50 * time.Millisecond, drain: time.Second, maxBody: 1 << 16, cacheMB: 1}
	go func() { done <- serveSidecar(ctx, o, zap.NewNop(), ready) }()
	addr := <-ready
	resp, err := http.Post("http://"+addr+"/ofrep/v1/evaluate/flags/performance-mode", "application/json", strings.NewReader(`{"context":{"cpuHeadroom":50}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"value":"fast"`) {
		t.Fatalf("got %s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestSidecarRequiresFile(t *testing.T) {
	code, _, errOut := runCLI("sidecar", "--log-format", "console")
	if code != 1 || !strings.Contains(errOut, "--file is required") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, _, errOut = runCLI("sidecar", "--file", "x.json", "--log-format", "xml")
	if code != 1 || !strings.Contains(errOut, `log-format "xml"`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestHelpListsCommands(t *testing.T) {
	code, out, _ := runCLI("--help")
	for _, c := range []string{"sidecar", "validate", "eval", "version"} {
		if code != 0 || !strings.Contains(out, c) {
			t.Fatalf("help lacks %s: %s", c, out)
		}
	}
}

func TestProbe(t *testing.T) {
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := sidecarOptions{addr: "127.0.0.1:0", file: "../../examples/basic.json", reload: time.Second, drain: time.Second, maxBody: 1 << 16}
	go func() { done <- serveSidecar(ctx, o, zap.NewNop(), ready) }()
	addr := <-ready
	if code, _, errOut := runCLI("probe", "--url", "http://"+addr+"/readyz"); code != 0 {
		t.Fatalf("probe: %d %s", code, errOut)
	}
	if code, _, _ := runCLI("probe", "--url", "http://"+addr+"/nope"); code != 1 {
		t.Fatalf("probe of a 404 must fail, got %d", code)
	}
	cancel()
	<-done
	http.DefaultClient.CloseIdleConnections()
}
