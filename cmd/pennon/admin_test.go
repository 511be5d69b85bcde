package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/internal/sign"
)

// TestAdminCLI drives the admin verbs against a real control plane (the dev
// system on random ports).
func TestAdminCLI(t *testing.T) {
	d := startDev(t)
	common := []string{"--server", d.api, "--token", d.admin, "--env", "dev"}
	cli := func(args ...string) (int, string, string) {
		return runCLI(append(args, common...)...)
	}
	code, out, errOut := cli("flags", "list")
	if code != 0 {
		t.Fatalf("flags list: %d %s", code, errOut)
	}
	golden(t, "admin_flags_list", out)
	def := `{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"safe"}`
	if code, out, errOut = cli("flags", "set", "performance-mode", "--definition", def, "--base", "1", "--reason", "test"); code != 0 || out != "committed dev version 2\n" {
		t.Fatalf("set: %d %q %s", code, out, errOut)
	}
	// A stale base is a readable conflict.
	code, _, errOut = cli("flags", "set", "performance-mode", "--definition", def, "--base", "1")
	if code != 1 || !strings.Contains(errOut, "performance-mode: you based your change on version 1; it is at version 2") {
		t.Fatalf("conflict: %d %s", code, errOut)
	}
	// An invalid definition lists its problems with paths.
	code, _, errOut = cli("flags", "set", "x", "--definition", `{"state":"ON","variants":{"a":1}}`)
	if code != 1 || !strings.Contains(errOut, `flags.x.state: "ON" is not allowed`) {
		t.Fatalf("invalid: %d %s", code, errOut)
	}
	code, out, _ = cli("diff", "--from", "1", "--to", "2")
	if code != 0 {
		t.Fatal(out)
	}
	golden(t, "admin_diff", out)
	code, out, errOut = cli("rollback", "--to", "1", "--flags", "performance-mode", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: %s", errOut)
	}
	golden(t, "admin_rollback_dry_run", out)
	if code, out, _ = cli("history", "--limit", "5"); code != 0 || !strings.Contains(out, "put performance-mode") || !strings.Contains(out, "load the checkout example") {
		t.Fatalf("history: %s", out)
	}
	if code, out, _ = cli("sidecars"); code != 0 || !strings.Contains(out, "sidecar(s)") {
		t.Fatalf("sidecars: %s", out)
	}
	exported := filepath.Join(t.TempDir(), "audit.jsonl")
	if code, _, errOut = cli("audit", "export", "--out", exported); code != 0 {
		t.Fatalf("export: %s", errOut)
	}
	if code, out, _ = cli("audit", "verify", "--file", exported); code != 0 || !strings.Contains(out, "audit chain OK") || !strings.Contains(out, "anchors checked") {
		t.Fatalf("verify: %d %s", code, out)
	}
	if code, out, _ = cli("audit", "verify"); code != 0 || !strings.Contains(out, "audit chain OK") {
		t.Fatalf("online verify: %d %s", code, out)
	}
	b, _ := os.ReadFile(exported)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if !strings.Contains(lines[0], `"pennonAuditExport":1`) || !strings.Contains(lines[0], `"checkpoint"`) {
		t.Fatalf("export header: %.300s", lines[0])
	}
	write := func(ls []string) {
		os.WriteFile(exported, []byte(strings.Join(ls, "\n")+"\n"), 0o600)
	}
	other, _ := sign.Generate()
	for _, tc := range []struct {
		name  string
		lines []string
		args  []string
		want  string
	}{
		{"edited entry", append([]string{lines[0], strings.Replace(lines[1], `"outcome":"`, `"outcome":"x`, 1)}, lines[2:]...), nil, "BROKEN at entry 1"},
		{"truncated tail", lines[:len(lines)-1], nil, "truncated tail"},
		{"pinned key that did not sign it", lines, []string{"--trust-key", other.Public().String()}, "not signed by the control plane"},
	} {
		write(tc.lines)
		if code, out, _ = cli(append([]string{"audit", "verify", "--file", exported}, tc.args...)...); code != 1 || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: %d %s", tc.name, code, out)
		}
	}
}
