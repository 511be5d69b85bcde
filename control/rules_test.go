package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// deniedEntries returns the audit entries with outcome "denied" for action.
func deniedEntries(entries []AuditEntry, action string) []AuditEntry {
	var out []AuditEntry
	for _, e := range entries {
		if e.Outcome == "denied" && e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// TestHandlerDenialsAudited checks that 403s decided inside handlers are
// audited like route-level ones: same outcome, the actor's token, the
// status and the message the caller got.
func TestHandlerDenialsAudited(t *testing.T) {
	f := setup(t)
	ed, ap, vw := f.tokens["editor"], f.tokens["approver"], f.tokens["viewer"]
	f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/a", `{"definition":`+flagDef+`}`)
	f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/a", `{"definition":`+strings.Replace(flagDef, "ENABLED", "DISABLED", 1)+`,"baseVersion":1}`)
	// A change request by the approver, and an emergency applied by them.
	_, body := f.do(t, ap, "PUT", "/api/v1/envs/prod/flags/cr", `{"definition":`+flagDef+`,"reason":"launch"}`)
	var cr struct{ ChangeRequest ChangeRequest }
	json.Unmarshal([]byte(body), &cr)
	if code, body := f.do(t, ap, "PUT", "/api/v1/envs/prod/flags/kill", `{"definition":`+flagDef+`,"reason":"outage","emergency":true}`); code != 201 {
		t.Fatalf("emergency: %d %s", code, body)
	}
	cases := []struct {
		name, token, method, path, body string
		action, message                 string
	}{
		{"emergency write by an editor", ed, "PUT", "/api/v1/envs/dev/flags/e", `{"definition":` + flagDef + `,"reason":"x","emergency":true}`, "emergency", "emergency changes need the approver role in dev"},
		{"rollback by a viewer", vw, "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"reason":"undo"}`, "rollback", "rolling back dev needs the editor role"},
		{"emergency rollback by an editor", ed, "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"reason":"undo","emergency":true}`, "emergency", "emergency changes need the approver role in dev"},
		{"promote from an env the token cannot see", f.tokenFor(t, "dev-only", map[string]string{"dev": "editor"}), "POST", "/api/v1/envs/dev/promote", `{"from":"prod","reason":"x"}`, "promote", "promoting from prod needs at least the viewer role there"},
		{"approve own change request", ap, "POST", "/api/v1/envs/prod/change-requests/" + cr.ChangeRequest.ID + "/approve", "", "approve", "someone else must approve or reject it"},
		{"reject own change request", ap, "POST", "/api/v1/envs/prod/change-requests/" + cr.ChangeRequest.ID + "/reject", `{"reason":"no"}`, "reject", "someone else must approve or reject it"},
		{"review own emergency", ap, "POST", "/api/v1/envs/prod/changesets/1/review", `{"note":"fine"}`, "review", "another approver must review it"},
		{"route-level role check", vw, "PUT", "/api/v1/envs/dev/flags/v", `{"definition":` + flagDef + `}`, "deny", "flags.put needs editor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(deniedEntries(f.auditEntries(t), tc.action))
			code, body := f.do(t, tc.token, tc.method, tc.path, tc.body)
			if code != 403 || !strings.Contains(body, tc.message) {
				t.Fatalf("got %d %s; want 403 with %q", code, body, tc.message)
			}
			got := deniedEntries(f.auditEntries(t), tc.action)
			if len(got) != before+1 {
				t.Fatalf("%d denied %q entries, want %d", len(got), tc.action, before+1)
			}
			e := got[len(got)-1]
			if !strings.Contains(e.Details["message"].(string), tc.message) || e.Details["status"] != float64(403) || !strings.Contains(e.Actor, "(") {
				t.Fatalf("audit entry: %+v", e)
			}
		})
	}
	// Another approver may review the emergency; the chain still verifies.
	if code, body := f.do(t, f.tokens["admin"], "POST", "/api/v1/envs/prod/changesets/1/review", `{"note":"ok"}`); code != 200 || !strings.Contains(body, "admin-bot") {
		t.Fatalf("review by another approver: %d %s", code, body)
	}
	if res := f.verify(t); !res.OK {
		t.Fatalf("verify: %+v", res)
	}
}

// tokenFor creates a token with roles and returns its secret.
func (f *fixture) tokenFor(t *testing.T, name string, roles map[string]string) string {
	t.Helper()
	sec, _, err := f.toks.Create(context.Background(), name, roles, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// TestReviewComparesTokenIDs: a second token with the same display name as
// the emergency's author is a different person and may review; a token
// whose name imitates the author's "name (id)" form cannot pass as them.
func TestReviewComparesTokenIDs(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ap := f.tokens["approver"]
	rec, err := f.toks.Authenticate(ctx, ap)
	if err != nil {
		t.Fatal(err)
	}
	twin := f.tokenFor(t, rec.Name, map[string]string{"prod": "approver"})
	mimic := f.tokenFor(t, rec.Name+" ("+rec.ID+")", map[string]string{"prod": "approver"})
	if code, body := f.do(t, mimic, "PUT", "/api/v1/envs/prod/flags/k1", `{"definition":`+flagDef+`,"reason":"r","emergency":true}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	if code, body := f.do(t, ap, "PUT", "/api/v1/envs/prod/flags/k2", `{"definition":`+flagDef+`,"reason":"r","emergency":true}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	cases := []struct {
		name, token string
		version     int
		want        int
	}{
		{"the real approver reviews the mimic's change", ap, 1, 200},
		{"the mimic cannot review its own change", mimic, 1, 403},
		{"the author cannot review its own change", ap, 2, 403},
		{"a twin with the same display name is someone else", twin, 2, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, tc.token, "POST", fmt.Sprintf("/api/v1/envs/prod/changesets/%d/review", tc.version), `{"note":"n"}`)
			if code != tc.want {
				t.Fatalf("got %d %s, want %d", code, body, tc.want)
			}
		})
	}
}

// TestDenialBurstRateLimited: a burst of denials from one token writes at
// most denyLimit entries per window, then one summary with the count, so a
// script cannot flood the chain; other tokens are not affected.
func TestDenialBurstRateLimited(t *testing.T) {
	f := setup(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.srv.denials.mu.Lock()
	f.srv.denials.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f.srv.denials.mu.Unlock()
	f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/a", `{"definition":`+flagDef+`}`)
	f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/a", `{"definition":`+strings.Replace(flagDef, "ENABLED", "DISABLED", 1)+`,"baseVersion":1}`)
	const burst = 40
	var wg sync.WaitGroup
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			path := "/api/v1/envs/dev/flags/x"
			if i%2 == 0 { // mix route-level and handler-level denials
				path = "/api/v1/envs/dev/rollback"
			}
			body := `{"definition":` + flagDef + `}`
			if i%2 == 0 {
				body = `{"toVersion":1,"reason":"r"}`
			}
			req, _ := http.NewRequest(map[bool]string{true: "POST", false: "PUT"}[i%2 == 0], f.base+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+f.tokens["viewer"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}(i)
	}
	wg.Wait()
	// Another token's denial is still written.
	if code, _ := f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/e", `{"definition":`+flagDef+`,"reason":"x","emergency":true}`); code != 403 {
		t.Fatal(code)
	}
	count := func(entries []AuditEntry, outcome string) int {
		n := 0
		for _, e := range entries {
			if e.Outcome == outcome {
				n++
			}
		}
		return n
	}
	entries := f.auditEntries(t)
	if got := count(entries, "denied"); got != denyLimit+1 {
		t.Fatalf("%d denied entries after a burst of %d, want %d (limit) + 1 (other token)", got, burst, denyLimit+1)
	}
	// The window ends; the summary is written by the flush (or by the
	// token's next denial, whichever comes first).
	mu.Lock()
	now = now.Add(denyWindowLen)
	mu.Unlock()
	for _, w := range f.srv.denials.expired(f.srv.denials.clock()) {
		f.srv.recordSuppressed(context.Background(), w)
	}
	entries = f.auditEntries(t)
	var summary *AuditEntry
	for i := range entries {
		if entries[i].Action == "deny.suppressed" {
			summary = &entries[i]
		}
	}
	if summary == nil || summary.Details["suppressed"] != float64(burst-denyLimit) || !strings.Contains(summary.Details["token"].(string), "viewer-bot") {
		t.Fatalf("summary entry: %+v", summary)
	}
	if res := f.verify(t); !res.OK {
		t.Fatalf("verify: %+v", res)
	}
}

// TestDenyLimiterWindows checks the limiter's bookkeeping on its own.
func TestDenyLimiterWindows(t *testing.T) {
	l := newDenyLimiter(2, time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		id        string
		at        time.Duration
		write     bool
		summaryOf int // suppressed count of the summary returned (0: none)
	}{
		{"a", 0, true, 0},
		{"a", time.Second, true, 0},
		{"a", 2 * time.Second, false, 0},
		{"b", 3 * time.Second, true, 0},
		{"a", 4 * time.Second, false, 0},
		{"a", time.Minute + time.Second, true, 2}, // new window: the old one's summary first
		{"a", time.Minute + 2*time.Second, true, 0},
	}
	for i, s := range steps {
		w, sum := l.admit(s.id, s.id+"-actor", "act", t0.Add(s.at))
		got := 0
		if sum != nil {
			got = sum.suppressed
		}
		if w != s.write || got != s.summaryOf {
			t.Fatalf("step %d: write=%v summary=%d, want %v %d", i, w, got, s.write, s.summaryOf)
		}
	}
	l.admit("a", "a-actor", "act", t0.Add(time.Minute+3*time.Second)) // suppressed
	if ws := l.expired(t0.Add(3 * time.Minute)); len(ws) != 1 || ws[0].id != "a" || ws[0].suppressed != 1 {
		t.Fatalf("expired: %+v", ws)
	}
	if len(l.open) != 0 {
		t.Fatalf("windows left open: %d", len(l.open))
	}
}

// TestAuthorizationHeaderAndOutage: the bearer scheme is case-insensitive,
// and a store outage answers 503 (retry), not 401 (your token is bad).
func TestAuthorizationHeaderAndOutage(t *testing.T) {
	f := setup(t)
	tok := f.tokens["viewer"]
	cases := []struct {
		header string
		want   int
		body   string
	}{
		{"Bearer " + tok, 200, `"name": "viewer-bot"`},
		{"bearer " + tok, 200, `"name": "viewer-bot"`},
		{"BEARER   " + tok + "  ", 200, `"name": "viewer-bot"`},
		{"Basic " + tok, 401, "missing bearer token"},
		{"Bearer", 401, "missing bearer token"},
		{"Bearer pnn_0123456789abcdef_nope", 401, "invalid token"},
	}
	get := func(header string) (int, string) {
		req, _ := http.NewRequest("GET", f.base+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	for _, tc := range cases {
		t.Run(tc.header, func(t *testing.T) {
			if code, body := get(tc.header); code != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("%q: %d %s", tc.header, code, body)
			}
		})
	}
	// NATS goes away: a valid token gets 503 with a retry hint.
	f.nats.Shutdown()
	f.nats.WaitForShutdown()
	code, body := get("Bearer " + tok)
	if code != 503 || !strings.Contains(body, `"code": "unavailable"`) || !strings.Contains(body, "unreachable") {
		t.Fatalf("outage: %d %s", code, body)
	}
	if code, _ := get("bearer " + tok); code != 503 {
		t.Fatalf("outage, second request: %d", code)
	}
	if n := f.logs.FilterMessageSnippet("store unreachable").Len(); n != 1 {
		t.Fatalf("outage logged %d times, want once", n)
	}
}

// TestStrictEnvelopes: request bodies are refused, naming the field, when
// encoding/json would have quietly accepted them.
func TestStrictEnvelopes(t *testing.T) {
	f := setup(t)
	ed := f.tokens["editor"]
	cases := []struct {
		name, method, path, body, want string
	}{
		{"duplicate top-level key", "PUT", "/api/v1/envs/dev/flags/a", `{"definition":` + flagDef + `,"reason":"a","reason":"b"}`, `duplicate key \"reason\" at the top level`},
		{"case variant of a known field", "PUT", "/api/v1/envs/dev/flags/a", `{"definition":` + flagDef + `,"Emergency":true}`, `field \"Emergency\" at the top level: did you mean \"emergency\"? field names are case-sensitive`},
		{"case variant in a nested object", "POST", "/api/v1/envs/dev/changesets", `{"changes":[{"Flag":"a","op":"put","definition":` + flagDef + `}]}`, `field \"Flag\" at \"changes[0]\": did you mean \"flag\"?`},
		{"duplicate key in a map", "POST", "/api/v1/tokens", `{"name":"x","roles":{"dev":"viewer","dev":"admin"}}`, `duplicate key \"dev\" at \"roles\"`},
		{"duplicate key inside a flag definition", "PUT", "/api/v1/envs/dev/flags/a", `{"definition":{"state":"ENABLED","state":"DISABLED","variants":{"on":true},"defaultVariant":"on"}}`, `duplicate key \"state\" at \"definition\"`},
		{"trailing data", "PUT", "/api/v1/envs/dev/flags/a", `{"definition":` + flagDef + `} {"emergency":true}`, "unexpected data after the JSON value"},
		{"trailing garbage", "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"dryRun":true}x`, "unexpected data after the JSON value"},
		{"unknown field lists the allowed ones", "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"dryrun2":true}`, `unknown field \"dryrun2\" at the top level (allowed: dryRun, emergency, flags, reason, toVersion)`},
		{"wrong type names the field", "POST", "/api/v1/envs/dev/rollback", `{"toVersion":"one"}`, `field \"toVersion\": a JSON string cannot be a uint64`},
		{"empty body", "POST", "/api/v1/envs/dev/changesets", ` `, "request body is empty"},
		{"null body", "POST", "/api/v1/envs/dev/changesets", `null`, "request body must be a JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := ed
			if strings.HasPrefix(tc.path, "/api/v1/tokens") {
				token = f.admin
			}
			code, body := f.do(t, token, tc.method, tc.path, tc.body)
			if code != 400 || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s\nwant 400 containing %s", code, body, tc.want)
			}
		})
	}
	// Nothing was written by any of them.
	if code, body := f.do(t, ed, "GET", "/api/v1/envs/dev", ""); code != 200 || !strings.Contains(body, `"version": 0`) {
		t.Fatalf("env after refused bodies: %d %s", code, body)
	}
}

// TestEvery403GoesThroughDeny guards the rule for handlers written later:
// a 403 (CodeForbidden, or an explicit http.StatusForbidden) built anywhere
// in the package must be handed to s.deny (on the same
// or the previous line), which audits it and applies the rate limit.
func TestEvery403GoesThroughDeny(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "errors.go" { // errors.go: the catalogue itself
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i, line := range lines {
			if !strings.Contains(line, "http.StatusForbidden") && !strings.Contains(line, "CodeForbidden") {
				continue
			}
			if strings.Contains(line, "s.deny(") || (i > 0 && strings.Contains(lines[i-1], "s.deny(")) {
				continue
			}
			t.Errorf("%s:%d: a 403 that bypasses s.deny (not audited, not rate-limited): %s", name, i+1, strings.TrimSpace(line))
		}
	}
}
