package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// The golden tests of the CLI: every verb of every command, run in order
// against one real control plane (the dev system: embedded NATS JetStream,
// control plane and a sidecar, in process), with its exit status, stdout
// and stderr compared to testdata/golden/<step>.golden. Run
// `go test ./cmd/pennon -run TestGoldenVerbs -update` to rewrite them after
// an intended change, and read the diff.
//
// Outputs are made deterministic by masking what differs between runs
// (times, random ids, secrets, keys, the server's port, the sidecar's
// host:pid); ids are numbered in order of first appearance, so a golden
// still shows that the id a command printed is the one the next used.

// goldenStep is one command line of the sequence.
type goldenStep struct {
	name string
	// args may hold {var} placeholders filled from earlier steps' captures.
	args []string
	code int
	// token overrides the admin token ("{approver}": a captured one).
	token string
	// local: no --server/--token/--env are added (commands without a server).
	local bool
	// capture reads values for later steps from the unmasked stdout.
	capture func(t *testing.T, out string, vars map[string]string)
	// before runs first (e.g. to wait for an observable condition).
	before func(t *testing.T, vars map[string]string)
}

// goldenExempt are commands without a golden step here, and why.
var goldenExempt = map[string]string{
	"server":  "runs a control plane until stopped (server_test.go, natsconfig_test.go, signing_test.go)",
	"sidecar": "serves until stopped (cli_test.go, sidecar_grpc_test.go)",
	"dev":     "serves until stopped (dev_test.go; this test runs it)",
	"bench":   "measures for seconds; its report is tested in bench_test.go and bench/",
	"inject":  "inject_test.go compares its YAML with goldens",
	"eval":    "TestCLIGolden",
	"probe":   "TestProbe",
	"version": "prints the build's Go version and commit; TestVersionRejectsArguments",

	// They need a local webhook receiver: webhooks_test.go.
	"webhooks": "TestWebhooksGolden",
	"events":   "TestWebhooksGolden",

	// Their reports depend on the clock and on usage: lifecycle_test.go runs
	// them against a control plane with a fixed clock and crafted usage.
	"lifecycle": "TestLifecycleAndRefsGolden",
	"refs":      "TestLifecycleAndRefsGolden",
}

func TestGoldenVerbs(t *testing.T) {
	dev := startDev(t)
	server, admin := dev.api, dev.admin
	host, _ := os.Hostname()
	m := newMasker(map[string]string{
		server: "<SERVER>", admin: "<ADMIN-TOKEN>", host + ":" + strconv.Itoa(os.Getpid()): "<SIDECAR>",
	})
	work := t.TempDir()
	auditFile := filepath.Join(work, "audit.jsonl")
	m.exact[work] = "<TMP>"

	def := `{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"safe"}`
	tmp := `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`
	steps := []goldenStep{
		// flags
		{name: "flags_list", args: []string{"flags", "list"}},
		{name: "flags_list_json", args: []string{"flags", "list", "--json"}},
		{name: "flags_get", args: []string{"flags", "get", "performance-mode"}},
		{name: "flags_get_json", args: []string{"flags", "get", "performance-mode", "--json"}},
		{name: "flags_get_not_found", args: []string{"flags", "get", "nope"}, code: 1},
		{name: "flags_get_without_key", args: []string{"flags", "get"}, code: 2},
		{name: "flags_without_verb", args: []string{"flags"}, code: 2},
		{name: "flags_unknown_verb", args: []string{"flags", "lst"}, code: 2},
		{name: "flags_flag_of_another_verb", args: []string{"flags", "list", "--reason", "x"}, code: 2},
		{name: "flags_unknown_flag", args: []string{"flags", "list", "--bogus"}, code: 2},
		{name: "flags_extra_argument", args: []string{"flags", "get", "a", "b"}, code: 2},
		{name: "flags_set", args: []string{"flags", "set", "performance-mode", "--definition", def, "--base", "1", "--reason", "golden"}},
		{name: "flags_set_conflict", args: []string{"flags", "set", "performance-mode", "--definition", def, "--base", "1"}, code: 1},
		{name: "flags_set_invalid", args: []string{"flags", "set", "x", "--definition", `{"state":"ON","variants":{"a":1}}`}, code: 1},
		{name: "flags_set_without_definition", args: []string{"flags", "set", "x"}, code: 2},
		{name: "flags_patch", args: []string{"flags", "--env", "dev", "--reason", "faster", "patch", "performance-mode", "--definition", `{"defaultVariant":"fast"}`}},
		{name: "flags_set_new", args: []string{"flags", "set", "temp-flag", "--definition", tmp, "--reason", "try"}},
		{name: "flags_delete", args: []string{"flags", "delete", "temp-flag", "--base", "4", "--reason", "cleanup"}},
		{name: "flags_delete_without_key", args: []string{"flags", "delete"}, code: 2},
		// history, diff, rollback
		{name: "history", args: []string{"history", "--limit", "5"}},
		{name: "history_flag", args: []string{"history", "--flag", "temp-flag"}},
		{name: "history_extra_argument", args: []string{"history", "all"}, code: 2},
		{name: "diff", args: []string{"diff", "--from", "1", "--to", "2"}},
		{name: "diff_json", args: []string{"diff", "--from", "1", "--to", "2", "--json"}},
		{name: "diff_without_from", args: []string{"diff"}, code: 2},
		{name: "rollback_without_to", args: []string{"rollback", "--dry-run"}, code: 2},
		{name: "rollback_to_zero", args: []string{"rollback", "--to", "0", "--dry-run"}, code: 2},
		{name: "rollback_dry_run", args: []string{"rollback", "--to", "1", "--flags", "performance-mode", "--dry-run"}},
		{name: "rollback", args: []string{"rollback", "--to", "1", "--flags", "performance-mode", "--reason", "undo"}},
		// envs, promote
		{name: "envs_create", args: []string{"envs", "create", "staging"}},
		{name: "envs_create_protected", args: []string{"envs", "create", "prod", "--protected"}},
		{name: "envs_list", args: []string{"envs", "list"}},
		{name: "envs_list_json", args: []string{"envs", "list", "--json"}},
		{name: "envs_unknown_verb", args: []string{"envs", "delete", "prod"}, code: 2},
		{name: "envs_create_without_name", args: []string{"envs", "create"}, code: 2},
		{name: "promote", args: []string{"promote", "--from", "dev", "--env", "staging", "--flags", "performance-mode", "--reason", "first"}},
		{name: "promote_without_from", args: []string{"promote", "--env", "staging"}, code: 2},
		// tokens
		{name: "tokens_create", args: []string{"tokens", "create", "--name", "second-approver", "--role", "*=approver", "--expires-in", "720h"},
			capture: func(t *testing.T, out string, vars map[string]string) {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				vars["approver"] = lines[len(lines)-1]
				_, id, _ := strings.Cut(lines[0], "created token:")
				vars["approver-id"] = strings.TrimSpace(id)
			}},
		{name: "tokens_create_without_role", args: []string{"tokens", "create", "--name", "x"}, code: 2},
		{name: "tokens_list", args: []string{"tokens", "list"}},
		{name: "tokens_revoke_typo", args: []string{"tokens", "revok", "{approver-id}"}, code: 2},
		{name: "tokens_revoke_without_id", args: []string{"tokens", "revoke"}, code: 2},
		// approvals in the protected environment
		{name: "flags_set_protected", args: []string{"flags", "set", "performance-mode", "--env", "prod", "--definition", def, "--reason", "to prod"},
			capture: captureCR("cr")},
		{name: "approvals_list", args: []string{"approvals", "list", "--env", "prod"}},
		{name: "approvals_approve_own", args: []string{"approvals", "approve", "{cr}", "--env", "prod"}, code: 1},
		{name: "approvals_approve", args: []string{"approvals", "approve", "{cr}", "--env", "prod"}, token: "{approver}"},
		{name: "flags_set_protected_again", args: []string{"flags", "patch", "performance-mode", "--env", "prod", "--definition", `{"defaultVariant":"fast"}`, "--reason", "faster in prod"},
			capture: captureCR("cr2")},
		{name: "approvals_reject_without_reason", args: []string{"approvals", "reject", "{cr2}", "--env", "prod"}, token: "{approver}", code: 2},
		{name: "approvals_reject", args: []string{"approvals", "reject", "{cr2}", "--env", "prod", "--reason", "not now"}, token: "{approver}"},
		{name: "approvals_list_empty", args: []string{"approvals", "list", "--env", "prod"}},
		{name: "approvals_unknown_verb", args: []string{"approvals", "aprove", "{cr2}"}, code: 2},
		{name: "tokens_revoke", args: []string{"tokens", "revoke", "{approver-id}"}},
		{name: "tokens_revoked_is_refused", args: []string{"envs", "list"}, token: "{approver}", code: 1},
		// fleet
		{name: "sidecars", args: []string{"sidecars"}, before: waitSidecarAtHead(server, admin)},
		{name: "sidecars_extra_argument", args: []string{"sidecars", "dev"}, code: 2},
		// incidents (crafted records sent over the sidecars' API path)
		{name: "incidents", args: []string{"incidents"}, before: postIncidents(server, admin)},
		{name: "incidents_superseded", args: []string{"incidents", "--status", "superseded"}},
		{name: "incidents_bad_status", args: []string{"incidents", "--status", "closed"}, code: 2},
		// experiments (none defined in these environments; experiment_test.go
		// runs reports with tracked events)
		{name: "experiment_list_empty", args: []string{"experiment", "list"}},
		{name: "experiment_report_not_an_experiment", args: []string{"experiment", "report", "performance-mode"}, code: 1},
		{name: "experiment_report_without_flag", args: []string{"experiment", "report"}, code: 2},
		{name: "experiment_flag_of_another_verb", args: []string{"experiment", "list", "--metric", "purchase"}, code: 2},
		// files
		{name: "export", args: []string{"export", "--env", "staging"}},
		{name: "apply_dry_run", args: []string{"apply", "-f", "../../examples/basic.json", "--env", "staging", "--dry-run"}},
		{name: "apply", args: []string{"apply", "-f", "../../examples/basic.json", "--env", "staging", "--reason", "basic flags"}},
		{name: "apply_without_file", args: []string{"apply", "--env", "staging"}, code: 2},
		{name: "import", args: []string{"import", "-f", "../../examples/basic.json", "--env", "staging", "--dry-run"}},
		// audit, doctor
		{name: "audit_export", args: []string{"audit", "export", "--out", auditFile}},
		{name: "audit_verify", args: []string{"audit", "verify"}},
		{name: "audit_verify_json", args: []string{"audit", "verify", "--json"}},
		{name: "audit_verify_file", args: []string{"audit", "verify", "--file", auditFile}},
		{name: "audit_flag_of_another_verb", args: []string{"audit", "export", "--file", auditFile}, code: 2},
		{name: "audit_unknown_verb", args: []string{"audit", "check"}, code: 2},
		{name: "doctor", args: []string{"doctor", "--all"}},
		{name: "doctor_json", args: []string{"doctor", "--env", "staging", "--json"}},
		// commands without a server
		{name: "validate", args: []string{"validate", "../../examples/basic.json"}, local: true},
		{name: "validate_without_file", args: []string{"validate"}, local: true, code: 2},
		{name: "server_unknown_verb", args: []string{"server", "keygn"}, local: true, code: 2},
		{name: "bench_unknown_verb", args: []string{"bench", "scal"}, local: true, code: 2},
	}
	vars := map[string]string{}
	for _, st := range steps {
		ok := t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before(t, vars)
			}
			args := make([]string, 0, len(st.args)+6)
			for _, a := range st.args {
				args = append(args, fill(t, a, vars))
			}
			shown := strings.Join(quoteArgs(args), " ")
			if !st.local {
				tok := admin
				if st.token != "" {
					tok = fill(t, st.token, vars)
				}
				if !containsFlag(args, "env") {
					args = append(args, "--env", "dev")
				}
				args = append(args, "--server", server, "--token", tok)
			}
			code, out, errOut := runCLI(args...)
			if code != st.code {
				t.Fatalf("pennon %s: exit %d, want %d\nstdout: %s\nstderr: %s", shown, code, st.code, out, errOut)
			}
			if st.capture != nil {
				st.capture(t, out, vars)
			}
			got := fmt.Sprintf("$ pennon %s\nexit %d\n--- stdout\n%s--- stderr\n%s", m.mask(shown), code, m.maskOut(out), m.mask(errOut))
			golden(t, filepath.Join("golden", st.name), got)
		})
		if !ok && st.capture != nil {
			t.Fatalf("step %s failed; later steps need what it captures", st.name)
		}
	}
	// Every registered command has a step (or a reason not to).
	have := map[string]bool{}
	for _, st := range steps {
		have[st.args[0]] = true
	}
	var missing []string
	for name := range commands {
		if !have[name] && goldenExempt[name] == "" {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("commands without a golden step (add one to TestGoldenVerbs): %s", strings.Join(missing, ", "))
	}
}

// captureCR reads the change request id from "change request ID opened".
func captureCR(name string) func(t *testing.T, out string, vars map[string]string) {
	return func(t *testing.T, out string, vars map[string]string) {
		f := strings.Fields(out)
		if len(f) < 3 || f[0] != "change" {
			t.Fatalf("no change request in %q", out)
		}
		vars[name] = f[2]
	}
}

// waitSidecarAtHead polls until the dev sidecar reports dev's head version
// over push, so the sidecars table does not depend on timing.
func waitSidecarAtHead(server, admin string) func(t *testing.T, _ map[string]string) {
	return func(t *testing.T, _ map[string]string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, out, errOut := runCLI("sidecars", "--json", "--env", "dev", "--server", server, "--token", admin)
			var s struct {
				Version  uint64
				Sidecars []struct {
					Version uint64
					State   string
				}
			}
			if code == 0 && json.Unmarshal([]byte(out), &s) == nil && len(s.Sidecars) == 1 &&
				s.Sidecars[0].Version == s.Version && s.Sidecars[0].State == "push" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sidecar did not report the head over push within 30s: %d %s %s", code, out, errOut)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

var placeholder = regexp.MustCompile(`\{[a-z0-9-]+\}`)

func fill(t *testing.T, s string, vars map[string]string) string {
	return placeholder.ReplaceAllStringFunc(s, func(p string) string {
		v, ok := vars[p[1:len(p)-1]]
		if !ok {
			t.Fatalf("%s: not captured by an earlier step", p)
		}
		return v
	})
}

func containsFlag(args []string, name string) bool { return givenOnCommandLine(args, name) }

// quoteArgs shell-quotes arguments that need it, for the golden's header.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \"'{}*$,") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// masker replaces what differs between runs with stable placeholders.
type masker struct {
	exact map[string]string
	ids   map[string]string
}

func newMasker(exact map[string]string) *masker {
	return &masker{exact: exact, ids: map[string]string{}}
}

var (
	maskTime   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	maskSecret = regexp.MustCompile(`pnn_[A-Za-z0-9_-]+`)
	maskKey    = regexp.MustCompile(`ed25519:[A-Za-z0-9+/=_-]+`)
	maskHash   = regexp.MustCompile(`\b[0-9a-f]{64}\b`)
	maskSig    = regexp.MustCompile(`"(signature|sig|hash|prevHash|auditHead)": ?"[^"]*"`)
	// Token ids (16 hex digits) and change request ids (12).
	maskID = regexp.MustCompile(`\b([0-9a-f]{16}|[0-9a-f]{12})\b`)
)

func (m *masker) mask(s string) string {
	// Longest first, so a URL is replaced before a prefix of it.
	keys := make([]string, 0, len(m.exact))
	for k := range m.exact {
		if k != "" {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		s = strings.ReplaceAll(s, k, m.exact[k])
	}
	s = maskSecret.ReplaceAllString(s, "<SECRET>")
	s = maskTime.ReplaceAllString(s, "<TIME>")
	s = maskKey.ReplaceAllString(s, "<KEY>")
	s = maskSig.ReplaceAllString(s, `"$1": "<MASKED>"`)
	s = maskHash.ReplaceAllString(s, "<HASH>")
	return maskID.ReplaceAllStringFunc(s, func(id string) string {
		p, ok := m.ids[id]
		if !ok {
			p = fmt.Sprintf("<ID%d>", len(m.ids)+1)
			m.ids[id] = p
		}
		return p
	})
}

// maskOut masks stdout and re-aligns the columns of tables (and of
// "name:  value" blocks) so that masked cells, whose width differs from
// what they hide, keep a stable layout. A column break is two or more
// spaces after a non-space; indented lines (JSON, diffs) are left alone.
func (m *masker) maskOut(s string) string {
	s = m.mask(s)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" && !strings.HasPrefix(line, " ") {
			line = columnBreak.ReplaceAllString(line, "$1\t")
		}
		fmt.Fprint(tw, line)
	}
	tw.Flush()
	return b.String()
}

var columnBreak = regexp.MustCompile(`(\S)  +`)

func TestVersionRejectsArguments(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != 0 || !strings.HasPrefix(out, "pennon ") {
		t.Fatalf("version: %d %q", code, out)
	}
	code, _, errOut := runCLI("version", "--bogus")
	if code != 2 {
		t.Fatalf("version --bogus: exit %d, want 2 (%s)", code, errOut)
	}
	code, out, _ = runCLI("version", "--json")
	var v struct{ Version, Commit, Go, OS, Arch string }
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.Go == "" {
		t.Fatalf("version --json: %d %q", code, out)
	}
}
