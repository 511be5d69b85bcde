package control

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/config"
)

// expiredDef is a flag that expired on 2026-01-01.
const expiredDef = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","owner":"web","expires":"2026-01-01"}`

// seedExpired commits the expired flag "old" straight to the store (the
// API would refuse to write it already expired in a blocking environment).
func seedExpired(t *testing.T, f *fixture, env string) {
	t.Helper()
	if _, err := f.store.Commit(context.Background(), &config.Changeset{Env: env, Author: "seed",
		Changes: []config.Change{{Flag: "old", Op: config.OpPut, Definition: json.RawMessage(expiredDef)}}}); err != nil {
		t.Fatal(err)
	}
}

// The expiredFlags rule on every write path: block refuses a change to an
// expired flag unless it extends expires (deleting is allowed), warn lets
// it through with the warning in the response.
func TestExpiredFlagPolicy(t *testing.T) {
	f := setup(t)
	for _, body := range []string{
		`{"name":"blocky","lifecycle":{"expiredFlags":"block"}}`,
		`{"name":"warny"}`,
		`{"name":"guarded","protected":true,"lifecycle":{"expiredFlags":"block"}}`,
	} {
		if code, resp := f.do(t, f.admin, "POST", "/api/v1/envs", body); code != 201 {
			t.Fatalf("create %s: %d %s", body, code, resp)
		}
	}
	for _, env := range []string{"blocky", "warny", "guarded"} {
		seedExpired(t, f, env)
	}
	touch := `{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on","owner":"web","expires":"2026-01-01"}`
	extend := `{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on","owner":"web","expires":"2099-12-31"}`
	blocked := `flag \"old\" expired on 2026-01-01: extend expires past now`
	cases := []struct {
		name, method, path, body string
		code                     int
		want                     []string // substrings of the body the user receives
	}{
		{"block: put", "PUT", "/api/v1/envs/blocky/flags/old", `{"baseVersion":1,"definition":` + touch + `}`, 422,
			[]string{`"code": "validation"`, `"path": "changes[0].definition.expires"`, blocked, `(blocky blocks changes to expired flags: lifecycle.expiredFlags is block)`}},
		{"block: commit", "POST", "/api/v1/envs/blocky/changesets", `{"changes":[{"flag":"old","op":"put","baseVersion":1,"definition":` + touch + `}]}`, 422, []string{blocked}},
		{"block: patch", "PATCH", "/api/v1/envs/blocky/flags/old?baseVersion=1", `{"state":"DISABLED"}`, 422, []string{blocked}},
		{"block: new flag already expired", "PUT", "/api/v1/envs/blocky/flags/new", `{"definition":` + expiredDef + `}`, 422,
			[]string{`flag \"new\" would be written already expired (expires 2026-01-01)`}},
		{"block: change request", "POST", "/api/v1/envs/guarded/changesets", `{"reason":"r","changes":[{"flag":"old","op":"put","baseVersion":1,"definition":` + touch + `}]}`, 422, []string{blocked, "guarded blocks"}},
		{"block: validate says so", "POST", "/api/v1/envs/blocky/validate", `{"flag":"old","definition":` + touch + `}`, 200,
			[]string{`"valid": false`, `"path": "definition.expires"`, blocked}},
		{"warn: validate lets it through", "POST", "/api/v1/envs/warny/validate", `{"flag":"old","definition":` + touch + `}`, 200, []string{`"valid": true`}},
		{"block: extending is allowed", "PUT", "/api/v1/envs/blocky/flags/old", `{"baseVersion":1,"definition":` + extend + `}`, 201, []string{`"version": 2`, `"flag": "old"`}},
		{"block: deleting is allowed", "DELETE", "/api/v1/envs/guarded/flags/old?baseVersion=1&reason=expired", "", 202, []string{`"changeRequest"`}},
		{"warn: put goes through with a warning", "PUT", "/api/v1/envs/warny/flags/old", `{"baseVersion":1,"definition":` + touch + `}`, 201,
			[]string{`"version": 2`, `"warnings": [`, blocked, `(allowed: lifecycle.expiredFlags is warn in warny)`}},
		{"bad policy", "POST", "/api/v1/envs", `{"name":"x","lifecycle":{"expiredFlags":"deny"}}`, 422,
			[]string{`"field": "lifecycle.expiredFlags"`, `lifecycle.expiredFlags: \"deny\" is not allowed (allowed: block, warn)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.doAs(t, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("%d %s, want %d", code, body, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %s:\n%s", w, body)
				}
			}
		})
	}
	// The warning is in the audit entry too.
	_, body := f.do(t, f.admin, "GET", "/api/v1/audit", "")
	if !strings.Contains(body, "lifecycle.expiredFlags is warn in warny") {
		t.Errorf("audit lacks the warning: %s", body)
	}
}

// doAs sends the request as the admin, a PATCH as a merge patch.
func (f *fixture) doAs(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	if method == "PATCH" {
		return f.doCT(t, f.admin, method, path, MergePatchType, body)
	}
	return f.do(t, f.admin, method, path, body)
}

// The report over the API: without a usage reader it says usage is
// unknown and calls nothing unused; the expired flag is found.
func TestLifecycleReportRoute(t *testing.T) {
	f := setup(t)
	seedExpired(t, f, "dev")
	cases := []struct {
		name, path string
		code       int
		want       []string
	}{
		{"report", "/api/v1/envs/dev/lifecycle", 200, []string{`"usageKnown": false`, `"usageNote": "usage unknown: no usage reader configured; no flag is reported unused or settled"`,
			`"key": "old"`, `"kind": "expired"`, `"message": "expired on 2026-01-01`, `"author": "seed"`, `"expiredFlags": "warn"`}},
		{"unknown env", "/api/v1/envs/nope/lifecycle", 404, []string{`"code": "not_found"`}},
		{"unknown parameter", "/api/v1/envs/dev/lifecycle?days=3", 400, []string{`"field": "days"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, f.admin, "GET", tc.path, "")
			if code != tc.code {
				t.Fatalf("%d %s, want %d", code, body, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %s:\n%s", w, body)
				}
			}
			if strings.Contains(body, `"unused"`) {
				t.Errorf("usage unknown, yet a flag is called unused: %s", body)
			}
		})
	}
}
