package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/config"
	flagsync "github.com/pennon-dev/pennon/sync"
)

func (f *fixture) doCT(t *testing.T, token, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func applyBody(t *testing.T, doc []byte, extra map[string]any) string {
	t.Helper()
	m := map[string]any{"document": json.RawMessage(doc)}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestApplyExportRoundTrip: examples/checkout.json ($evaluators, metadata)
// → apply → export gives the file's canonical bytes, which a file-mode
// sidecar loads unchanged, and applying the export again plans nothing.
func TestApplyExportRoundTrip(t *testing.T) {
	f := setup(t)
	file, err := os.ReadFile("../examples/checkout.json")
	if err != nil {
		t.Fatal(err)
	}
	code, body := f.do(t, f.tokens["editor"], "POST", "/api/v1/envs/dev/apply", applyBody(t, file, map[string]any{"reason": "load checkout"}))
	if code != 201 || !strings.Contains(body, `"changeset"`) {
		t.Fatalf("apply: %d %s", code, body)
	}
	var res struct {
		Changeset config.Changeset
		Text      string
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	if res.Changeset.Evaluators["internalUser"] == nil || res.Changeset.Metadata["flagSet"] != "checkout" || res.Changeset.Author != "editor-bot ("+f.tokenID(t, "editor")+")" {
		t.Fatalf("changeset does not carry the set's parts: %+v", res.Changeset)
	}
	if !strings.Contains(res.Text, "+ $evaluators.internalUser: ") || !strings.Contains(res.Text, "+ payment-api-v2\n") {
		t.Fatalf("plan text:\n%s", res.Text)
	}
	code, exported := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/export", "")
	if code != 200 {
		t.Fatalf("export: %d %s", code, exported)
	}
	want, err := config.Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	if exported != string(want.Canonical()) {
		t.Fatalf("export is not the file's canonical form:\n got %s\nwant %s", exported, want.Canonical())
	}
	// A file-mode sidecar loads the export as it is.
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, []byte(exported), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := flagsync.NewFileSource(flagsync.FileOptions{Path: path, NoWatch: true})
	if err != nil {
		t.Fatalf("sidecar --file rejects the export: %v", err)
	}
	if n := src.Current().Len(); n != want.Len() {
		t.Fatalf("sidecar loaded %d flags, want %d", n, want.Len())
	}
	// Applying the export again is a no-op.
	code, body = f.do(t, f.tokens["editor"], "POST", "/api/v1/envs/dev/apply", applyBody(t, []byte(exported), nil))
	if code != 200 || !strings.Contains(body, "nothing to apply") {
		t.Fatalf("re-apply: %d %s", code, body)
	}
}

func (f *fixture) tokenID(t *testing.T, role string) string {
	t.Helper()
	id, _, _ := splitToken(f.tokens[role])
	return id
}

// TestWritesCarryEvaluatorsAndMetadata: the changeset endpoint accepts
// evaluators and metadata; diff, history and rollback include them.
func TestWritesCarryEvaluatorsAndMetadata(t *testing.T) {
	f := setup(t)
	ed := f.tokens["editor"]
	ref := `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"$ref":"staff"},"on","off"]}}`
	code, body := f.do(t, ed, "POST", "/api/v1/envs/dev/changesets", `{"reason":"r","evaluators":{"staff":{"ends_with":[{"var":"email"},"@a.example"]}},"metadata":{"team":"x"},"changes":[{"flag":"beta","op":"put","definition":`+ref+`}]}`)
	if code != 201 {
		t.Fatalf("commit with evaluators: %d %s", code, body)
	}
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/changesets", `{"reason":"r","evaluators":{"staff":{"ends_with":[{"var":"email"},"@b.example"]}}}`)
	if code != 201 {
		t.Fatalf("evaluators-only commit: %d %s", code, body)
	}
	// A $ref to an evaluator that does not exist is refused whole.
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/changesets", `{"reason":"r","evaluators":{"other":true}}`)
	if code != 422 || !strings.Contains(body, "$evaluators.staff") {
		t.Fatalf("dropping a referenced evaluator: %d %s", code, body)
	}
	code, body = f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/diff?from=1&to=2&format=text", "")
	if code != 200 || !strings.Contains(body, "~ $evaluators changed\n~ $evaluators.staff: {\"ends_with\":[{\"var\":\"email\"},\"@a.example\"]} → {\"ends_with\":[{\"var\":\"email\"},\"@b.example\"]}\n") {
		t.Fatalf("diff: %d %s", code, body)
	}
	code, body = f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/history", "")
	if code != 200 || !strings.Contains(body, "@b.example") {
		t.Fatalf("history: %d %s", code, body)
	}
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/rollback?format=text", `{"toVersion":1,"dryRun":true}`)
	if code != 200 || !strings.Contains(body, `~ $evaluators.staff restored: {"ends_with":[{"var":"email"},"@a.example"]}`) {
		t.Fatalf("rollback dry run: %d %s", code, body)
	}
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"reason":"undo"}`)
	if code != 201 {
		t.Fatalf("rollback: %d %s", code, body)
	}
	head, err := f.store.Head(context.Background(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(head.Doc.Evaluators()["staff"]); !strings.Contains(got, "@a.example") {
		t.Fatalf("rollback did not restore the evaluator: %s", got)
	}
	// Protected: the change request carries them and applies them.
	code, body = f.do(t, ed, "POST", "/api/v1/envs/prod/changesets", `{"reason":"r","evaluators":{"staff":true},"metadata":{"team":"y"}}`)
	if code != 202 || !strings.Contains(body, `"evaluators"`) {
		t.Fatalf("protected: %d %s", code, body)
	}
	var cr struct{ ChangeRequest ChangeRequest }
	_ = json.Unmarshal([]byte(body), &cr)
	code, body = f.do(t, f.tokens["approver"], "POST", "/api/v1/envs/prod/change-requests/"+cr.ChangeRequest.ID+"/approve", `{}`)
	if code != 200 || !strings.Contains(body, `"staff": true`) {
		t.Fatalf("approve: %d %s", code, body)
	}
}

// TestPromoteCarriesReferencedEvaluators: promoting a flag that uses $ref
// brings the evaluator along (it used to be a 422).
func TestPromoteCarriesReferencedEvaluators(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.store.CreateEnv(ctx, config.EnvSettings{Name: "staging"}); err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile("../examples/checkout.json")
	if code, body := f.do(t, f.tokens["editor"], "POST", "/api/v1/envs/dev/apply", applyBody(t, file, nil)); code != 201 {
		t.Fatalf("apply: %d %s", code, body)
	}
	code, body := f.do(t, f.admin, "POST", "/api/v1/envs/staging/promote", `{"from":"dev","flags":["payment-api-v1","payment-api-v2"],"reason":"ship"}`)
	if code != 201 {
		t.Fatalf("promote: %d %s", code, body)
	}
	head, _ := f.store.Head(ctx, "staging")
	if got := string(head.Doc.Evaluators()["internalUser"]); got != `{"ends_with":[{"var":"email"},"@pennon.dev"]}` {
		t.Fatalf("staging evaluator: %q", got)
	}
}

// TestApplyPlanAndPrune checks the plan the API returns for each kind of
// difference, with and without prune.
func TestApplyPlanAndPrune(t *testing.T) {
	f := setup(t)
	ed := f.tokens["editor"]
	base := `{"flags":{"a":` + flagDef + `,"b":` + flagDef + `},"$evaluators":{"e":true}}`
	if code, body := f.do(t, ed, "POST", "/api/v1/envs/dev/apply", applyBody(t, []byte(base), nil)); code != 201 {
		t.Fatalf("seed: %d %s", code, body)
	}
	next := `{"flags":{"a":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},"c":` + flagDef + `},"metadata":{"team":"t"},"$evaluators":{"f":false}}`
	tests := []struct {
		name  string
		prune bool
		want  string
	}{
		{"keep", false, "Plan for dev at version 1: 1 to add, 1 to change, 0 to remove, 0 unchanged, 1 kept (not in the file; --prune deletes them)\n" +
			"~ a\n    state: \"ENABLED\" → \"DISABLED\"\n+ c\n= b (kept: not in the file)\n+ $evaluators.f: false\n~ metadata: (absent) → {\"team\":\"t\"}\n" +
			"note: $evaluators.e is not in the file and is kept (use prune to drop it)\n"},
		{"prune", true, "Plan for dev at version 1: 1 to add, 1 to change, 1 to remove, 0 unchanged\n" +
			"~ a\n    state: \"ENABLED\" → \"DISABLED\"\n- b\n+ c\n- $evaluators.e: true\n+ $evaluators.f: false\n~ metadata: (absent) → {\"team\":\"t\"}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, f.tokens["viewer"], "POST", "/api/v1/envs/dev/apply?format=text", applyBody(t, []byte(next), map[string]any{"prune": tc.prune, "dryRun": true}))
			if code != 200 || body != tc.want {
				t.Fatalf("%d\n got %q\nwant %q", code, body, tc.want)
			}
		})
	}
	// A viewer may plan but not apply.
	if code, body := f.do(t, f.tokens["viewer"], "POST", "/api/v1/envs/dev/apply", applyBody(t, []byte(next), nil)); code != 403 {
		t.Fatalf("viewer apply: %d %s", code, body)
	}
	// An invalid file is refused with paths into the document.
	code, body := f.do(t, ed, "POST", "/api/v1/envs/dev/apply", applyBody(t, []byte(`{"flags":{"x":{"state":"ON"}}}`), nil))
	if code != 422 || !strings.Contains(body, `"path": "document.flags.x.state"`) {
		t.Fatalf("invalid: %d %s", code, body)
	}
	// Prune applies as one changeset.
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/apply", applyBody(t, []byte(next), map[string]any{"prune": true}))
	if code != 201 {
		t.Fatalf("apply prune: %d %s", code, body)
	}
	head, _ := f.store.Head(context.Background(), "dev")
	if head.Version != 2 || head.Doc.Flag("b") != nil || head.Doc.Flag("c") == nil || head.Doc.Evaluators()["e"] != nil {
		t.Fatalf("after prune: v%d %s", head.Version, head.Doc.Canonical())
	}
}

// TestApplyConflict: a flag changed between the plan and the apply is a 409
// naming it, and nothing is applied.
func TestApplyConflict(t *testing.T) {
	f := setup(t)
	ed := f.tokens["editor"]
	if code, body := f.do(t, ed, "POST", "/api/v1/envs/dev/apply", applyBody(t, []byte(`{"flags":{"a":`+flagDef+`,"b":`+flagDef+`}}`), nil)); code != 201 {
		t.Fatalf("seed: %d %s", code, body)
	}
	file := []byte(`{"flags":{"a":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},"b":` + flagDef + `}}`)
	code, body := f.do(t, ed, "POST", "/api/v1/envs/dev/apply", applyBody(t, file, map[string]any{"dryRun": true}))
	if code != 200 {
		t.Fatalf("plan: %d %s", code, body)
	}
	var plan struct {
		Plan struct {
			BaseVersions map[string]uint64 `json:"baseVersions"`
		}
	}
	_ = json.Unmarshal([]byte(body), &plan)
	// Someone changes a meanwhile.
	if code, body := f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/a", `{"definition":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},"baseVersion":1}`); code != 201 {
		t.Fatalf("concurrent put: %d %s", code, body)
	}
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/apply", applyBody(t, file, map[string]any{"baseVersions": plan.Plan.BaseVersions}))
	if code != 409 || !strings.Contains(body, `"flag": "a"`) || !strings.Contains(body, "a changed at version 2") {
		t.Fatalf("want a 409 naming a: %d %s", code, body)
	}
	head, _ := f.store.Head(context.Background(), "dev")
	if head.Version != 2 {
		t.Fatalf("something was applied: version %d", head.Version)
	}
}

// TestMergePatch: PATCH keeps the fields it does not name.
func TestMergePatch(t *testing.T) {
	f := setup(t)
	ed := f.tokens["editor"]
	full := `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","owner":"team-a","expires":"2099-01-01","systems":["web"],"description":"d"}`
	if code, body := f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/x", `{"definition":`+full+`}`); code != 201 {
		t.Fatalf("seed: %d %s", code, body)
	}
	tests := []struct {
		name, ct, query, patch string
		code                   int
		want                   string // in the body (on success: the flag's definition afterwards)
	}{
		{"keeps untouched, null removes", MergePatchType, "?baseVersion=1", `{"defaultVariant":"off","description":null}`, 201,
			`{"state":"ENABLED","variants":{"off":false,"on":true},"defaultVariant":"off","owner":"team-a","expires":"2099-01-01","systems":["web"]}`},
		{"nested merge adds a variant", MergePatchType, "?baseVersion=2", `{"variants":{"maybe":false}}`, 201,
			`{"state":"ENABLED","variants":{"maybe":false,"off":false,"on":true},"defaultVariant":"off","owner":"team-a","expires":"2099-01-01","systems":["web"]}`},
		{"stale base", MergePatchType, "?baseVersion=1", `{"owner":"b"}`, 409, `x changed at version 3`},
		{"base required", MergePatchType, "", `{"owner":"b"}`, 422, `"path": "baseVersion"`},
		{"json is not a merge patch", "application/json", "?baseVersion=3", `{"owner":"b"}`, 415, MergePatchType},
		{"result validated", MergePatchType, "?baseVersion=3", `{"defaultVariant":"nope"}`, 422, `flags.x.defaultVariant`},
		{"not an object", MergePatchType, "?baseVersion=3", `[1]`, 400, "must be a JSON object"},
		{"duplicate keys", MergePatchType, "?baseVersion=3", `{"owner":"a","owner":"b"}`, 400, "duplicate key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.doCT(t, ed, "PATCH", "/api/v1/envs/dev/flags/x"+tc.query, tc.ct, tc.patch)
			if code != tc.code {
				t.Fatalf("%d %s", code, body)
			}
			if code == 201 {
				head, _ := f.store.Head(context.Background(), "dev")
				body = string(head.Doc.FlagJSON("x"))
				if body != tc.want {
					t.Fatalf("definition\n got %s\nwant %s", body, tc.want)
				}
				return
			}
			if !strings.Contains(body, tc.want) {
				t.Fatalf("body %s lacks %q", body, tc.want)
			}
		})
	}
	if code, body := f.doCT(t, ed, "PATCH", "/api/v1/envs/dev/flags/ghost?baseVersion=0", MergePatchType, `{}`); code != 404 {
		t.Fatalf("missing flag: %d %s", code, body)
	}
}

// TestWatchDir: a changed file is applied as one changeset authored by
// gitops with the git commit in the reason; a broken file is rejected
// whole, logged once and counted.
func TestWatchDir(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	gitOK := exec.Command("git", "--version").Run() == nil
	commit := func(msg string) {
		if !gitOK {
			return
		}
		for _, args := range [][]string{{"add", "-A"}, {"-c", "user.name=Ada", "-c", "user.email=ada@example.com", "commit", "-qm", msg}} {
			if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("git %v: %v %s", args, err, out)
			}
		}
	}
	if gitOK {
		if out, err := exec.Command("git", "-C", dir, "init", "-q").CombinedOutput(); err != nil {
			t.Fatalf("git init: %v %s", err, out)
		}
	}
	file, _ := os.ReadFile("../examples/checkout.json")
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("dev.json", file)
	write("notes.txt", []byte("ignored"))
	commit("checkout flags")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.WatchDir(ctx, WatchOptions{Dir: dir, Every: 20 * time.Millisecond}) }()
	t.Cleanup(func() { cancel(); <-done })
	waitVersion := func(v uint64) *config.State {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if head, err := f.store.Head(context.Background(), "dev"); err == nil && head.Version >= v {
				return head
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("dev did not reach version %d", v)
		return nil
	}
	head := waitVersion(1)
	want, _ := config.Parse(file)
	if !bytes.Equal(head.Doc.Export(), want.Export()) {
		t.Fatalf("applied set differs:\n%s", head.Doc.Export())
	}
	cs, _ := f.store.Changeset(context.Background(), "dev", 1)
	if cs.Author != "gitops (gitops)" || !strings.HasPrefix(cs.Reason, "gitops: dev.json ") {
		t.Fatalf("author/reason: %q %q", cs.Author, cs.Reason)
	}
	if gitOK && !strings.Contains(cs.Reason, "by Ada <ada@example.com>: checkout flags") {
		t.Fatalf("reason lacks the commit: %q", cs.Reason)
	}
	// A broken file: rejected whole, once, counted; the set stays.
	write("dev.json", []byte(`{"flags":{"payment-api-v1":{"state":"ON"}}}`))
	rejected := func() float64 { return gitopsCount(t, f.srv, "dev", "rejected") }
	deadline := time.Now().Add(10 * time.Second)
	for rejected() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rejected() != 1 {
		t.Fatalf("rejections counted: %v", rejected())
	}
	time.Sleep(100 * time.Millisecond) // several more checks of the same broken file: still one rejection
	if rejected() != 1 || len(f.logs.FilterMessage("flag file rejected; nothing applied").All()) != 1 {
		t.Fatalf("a broken file is reported once: %v, %d log lines", rejected(), len(f.logs.FilterMessage("flag file rejected; nothing applied").All()))
	}
	if head, _ := f.store.Head(context.Background(), "dev"); head.Version != 1 {
		t.Fatalf("broken file applied: version %d", head.Version)
	}
	// Fixed: a change applies as version 2.
	changed := bytes.Replace(file, []byte(`"flagSet": "checkout"`), []byte(`"flagSet": "checkout-2"`), 1)
	write("dev.json", changed)
	commit("rename the set")
	head = waitVersion(2)
	if head.Doc.Metadata()["flagSet"] != "checkout-2" {
		t.Fatalf("metadata: %v", head.Doc.Metadata())
	}
	// A protected environment gets a change request, not a commit.
	write("prod.json", file)
	deadline = time.Now().Add(10 * time.Second)
	for gitopsCount(t, f.srv, "prod", "change-request") < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/prod/change-requests?state=open", "")
	if code != 200 || !strings.Contains(body, `"author": "gitops (gitops)"`) || !strings.Contains(body, `"internalUser"`) {
		t.Fatalf("change request: %d %s", code, body)
	}
	if head, _ := f.store.Head(context.Background(), "prod"); head.Version != 0 {
		t.Fatalf("protected environment written directly: version %d", head.Version)
	}
}

// gitopsCount reads pennon_gitops_files_total{env,outcome} from the
// server's registry.
func gitopsCount(t *testing.T, s *Server, env, outcome string) float64 {
	t.Helper()
	mfs, err := s.o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pennon_gitops_files_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["env"] == env && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
