package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/config"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// TestExportApplyCLI drives export, apply (plans as golden files, commit,
// prune) and flags patch against a real control plane (the dev system).
func TestExportApplyCLI(t *testing.T) {
	d := startDev(t)
	cli := func(args ...string) (int, string, string) {
		return runCLI(append(args, "--server", d.api, "--token", d.admin, "--env", "dev")...)
	}
	dir := t.TempDir()
	exported := filepath.Join(dir, "flags.json")
	// dev starts with examples/checkout.json: the export is its canonical form.
	code, out, errOut := cli("export")
	if code != 0 {
		t.Fatalf("export: %s", errOut)
	}
	file, err := os.ReadFile("../../examples/checkout.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	// On stdout the canonical form ends with a newline, for the terminal.
	if out != string(want.Canonical())+"\n" {
		t.Fatalf("export is not checkout.json's canonical form:\n%s", out)
	}
	if code, _, errOut = cli("export", "--out", exported); code != 0 {
		t.Fatalf("export --out: %s", errOut)
	}
	if _, err := flagsync.NewFileSource(flagsync.FileOptions{Path: exported, NoWatch: true}); err != nil {
		t.Fatalf("pennon sidecar --file rejects the export: %v", err)
	}
	if code, out, errOut = cli("apply", "-f", exported); code != 0 {
		t.Fatalf("apply unchanged: %s", errOut)
	}
	golden(t, "apply_unchanged", out)

	// Edit the file: change one flag, drop one, add one, change an evaluator.
	edited := strings.NewReplacer(
		`"defaultVariant":"balanced"`, `"defaultVariant":"safe"`,
		`"@pennon.dev"`, `"@staff.pennon.dev"`,
	).Replace(out0(t, exported))
	edited = dropFlag(t, edited, "legacy-payment")
	edited = strings.Replace(edited, `"flags":{`, `"flags":{"dark-mode":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},`, 1)
	editedPath := filepath.Join(dir, "edited.json")
	if err := os.WriteFile(editedPath, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, prune string }{{"apply_plan", ""}, {"apply_plan_prune", "--prune"}} {
		args := []string{"apply", "-f", editedPath, "--dry-run"}
		if tc.prune != "" {
			args = append(args, tc.prune)
		}
		if code, out, errOut = cli(args...); code != 0 {
			t.Fatalf("%s: %s", tc.name, errOut)
		}
		golden(t, tc.name, out)
	}
	if code, out, errOut = cli("apply", "-f", editedPath, "--prune", "--reason", "from git"); code != 0 || !strings.HasSuffix(out, "committed dev version 2\n") {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if code, out, _ = cli("export"); code != 0 || !strings.Contains(out, `"dark-mode"`) || strings.Contains(out, `"legacy-payment"`) || !strings.Contains(out, "@staff.pennon.dev") {
		t.Fatalf("export after apply: %s", out)
	}
	// A merge patch keeps the fields it does not name.
	if code, out, errOut = cli("flags", "patch", "performance-mode", "--definition", `{"defaultVariant":"fast"}`); code != 0 || out != "committed dev version 3\n" {
		t.Fatalf("patch: %d %s %s", code, out, errOut)
	}
	if code, out, _ = cli("flags", "get", "performance-mode"); code != 0 || !strings.Contains(out, `"owner": "platform-team"`) || !strings.Contains(out, `"defaultVariant": "fast"`) {
		t.Fatalf("after patch: %s", out)
	}
	// A patch based on an old version is a conflict naming the flag.
	if code, _, errOut = cli("flags", "patch", "performance-mode", "--base", "2", "--definition", `{"defaultVariant":"safe"}`); code != 1 || !strings.Contains(errOut, "performance-mode: you based your change on version 2; it is at version 3") {
		t.Fatalf("stale patch: %d %s", code, errOut)
	}
}

func out0(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dropFlag removes one flag from a canonical document.
func dropFlag(t *testing.T, doc, key string) string {
	t.Helper()
	d, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	def := string(d.FlagJSON(key))
	if def == "" {
		t.Fatalf("no flag %s", key)
	}
	out := strings.Replace(doc, `"`+key+`":`+def+`,`, "", 1)
	if out == doc {
		t.Fatalf("could not drop %s", key)
	}
	return out
}
