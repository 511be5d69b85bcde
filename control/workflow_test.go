package control

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/natsrun"
)

func TestProtectedEnvironmentNeedsAnotherApprover(t *testing.T) {
	f := setup(t)
	ed, ap := f.tokens["editor"], f.tokens["approver"]
	code, body := f.do(t, ed, "PUT", "/api/v1/envs/prod/flags/checkout", `{"definition":`+flagDef+`}`)
	if code != 422 || !strings.Contains(body, `"path": "reason"`) {
		t.Fatalf("protected write without reason: %d %s", code, body)
	}
	code, body = f.do(t, ap, "PUT", "/api/v1/envs/prod/flags/checkout", `{"definition":`+flagDef+`,"reason":"launch"}`)
	if code != 202 {
		t.Fatalf("change request: %d %s", code, body)
	}
	var out struct{ ChangeRequest ChangeRequest }
	json.Unmarshal([]byte(body), &out)
	id := out.ChangeRequest.ID
	// Nothing applied yet.
	if code, _ := f.do(t, ed, "GET", "/api/v1/envs/prod/flags/checkout", ""); code != 404 {
		t.Fatalf("applied before approval: %d", code)
	}
	// The author cannot approve their own request, an editor cannot approve at all.
	if code, body := f.do(t, ap, "POST", "/api/v1/envs/prod/change-requests/"+id+"/approve", ""); code != 403 || !strings.Contains(body, "someone else") {
		t.Fatalf("self-approval: %d %s", code, body)
	}
	if code, _ := f.do(t, ed, "POST", "/api/v1/envs/prod/change-requests/"+id+"/approve", ""); code != 403 {
		t.Fatalf("editor approval: %d", code)
	}
	code, body = f.do(t, f.tokens["admin"], "POST", "/api/v1/envs/prod/change-requests/"+id+"/approve", "")
	if code != 200 || !strings.Contains(body, `"state": "applied"`) {
		t.Fatalf("approval: %d %s", code, body)
	}
	code, body = f.do(t, ed, "GET", "/api/v1/envs/prod/flags/checkout", "")
	if code != 200 || !strings.Contains(body, `"version": 1`) {
		t.Fatalf("after approval: %d %s", code, body)
	}
	// A second request based on version 0 conflicts at approval time.
	_, body = f.do(t, ap, "PUT", "/api/v1/envs/prod/flags/checkout", `{"definition":`+flagDef+`,"reason":"stale","baseVersion":0}`)
	json.Unmarshal([]byte(body), &out)
	if code, body := f.do(t, f.tokens["admin"], "POST", "/api/v1/envs/prod/change-requests/"+out.ChangeRequest.ID+"/approve", ""); code != 409 {
		t.Fatalf("stale approval: %d %s", code, body)
	}
	// Emergency: applied directly, flagged, listed until reviewed.
	code, body = f.do(t, ap, "PUT", "/api/v1/envs/prod/flags/kill-switch", `{"definition":`+flagDef+`,"reason":"outage","emergency":true}`)
	if code != 201 || !strings.Contains(body, `"emergency": true`) {
		t.Fatalf("emergency: %d %s", code, body)
	}
	_, body = f.do(t, ed, "GET", "/api/v1/emergencies?reviewed=false", "")
	if !strings.Contains(body, "kill-switch") {
		t.Fatalf("emergency not listed: %s", body)
	}
	if code, body := f.do(t, f.tokens["admin"], "POST", "/api/v1/envs/prod/changesets/2/review", `{"note":"ok"}`); code != 200 {
		t.Fatalf("review: %d %s", code, body)
	}
	_, body = f.do(t, ed, "GET", "/api/v1/emergencies?reviewed=false", "")
	if strings.Contains(body, "kill-switch") {
		t.Fatalf("reviewed emergency still listed: %s", body)
	}
	// Every step is in the audit chain, which verifies.
	_, body = f.do(t, f.admin, "GET", "/api/v1/audit", "")
	for _, want := range []string{`"action": "change-request"`, `"action": "approve"`, `"outcome": "denied"`, `"action": "review"`} {
		if !strings.Contains(body, want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	_, body = f.do(t, f.admin, "GET", "/api/v1/audit/verify", "")
	if !strings.Contains(body, `"ok": true`) {
		t.Fatalf("verify: %s", body)
	}
}

func TestAuditTamperDetected(t *testing.T) {
	f := setup(t)
	for i := 0; i < 5; i++ {
		f.do(t, f.tokens["editor"], "PUT", fmt.Sprintf("/api/v1/envs/dev/flags/f%d", i), `{"definition":`+flagDef+`}`)
	}
	// Offline: edit one exported entry.
	_, body := f.do(t, f.admin, "GET", "/api/v1/audit", "")
	var out struct{ Entries []AuditEntry }
	json.Unmarshal([]byte(body), &out)
	if len(out.Entries) < 5 || !VerifyEntries(out.Entries, nil, f.srv.trust).OK {
		t.Fatalf("chain: %d entries, %+v", len(out.Entries), VerifyEntries(out.Entries, nil, f.srv.trust))
	}
	edited := append([]AuditEntry(nil), out.Entries...)
	edited[2].Actor = "mallory"
	if r := VerifyEntries(edited, nil, f.srv.trust); r.OK || r.FirstBad != 3 || !strings.Contains(r.Problem, "edited") {
		t.Fatalf("edit not named: %+v", r)
	}
	// In the stream: delete one message.
	nc := natsrun.ConnectTest(t, f.nats)
	js, _ := jetstream.New(nc)
	st, _ := js.Stream(context.Background(), config.AuditStream)
	if err := st.DeleteMsg(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	_, body = f.do(t, f.admin, "GET", "/api/v1/audit/verify", "")
	if !strings.Contains(body, `"ok": false`) || !strings.Contains(body, `"firstBad": 4`) || !strings.Contains(body, "deleted") {
		t.Fatalf("deletion not named: %s", body)
	}
}

func TestPolicyRollbackDiffPromote(t *testing.T) {
	f := setup(t)
	adm := f.tokens["admin"]
	code, body := f.do(t, f.admin, "POST", "/api/v1/envs", `{"name":"strict","requireOwner":true,"requireExpires":true,"maxLifetime":"720h"}`)
	if code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	code, body = f.do(t, f.admin, "PUT", "/api/v1/envs/strict/flags/x", `{"definition":`+flagDef+`}`)
	if code != 422 || !strings.Contains(body, "must name an owner") || !strings.Contains(body, "must have an expiry date") {
		t.Fatalf("policy: %d %s", code, body)
	}
	code, body = f.do(t, f.admin, "PUT", "/api/v1/envs/strict/flags/x", `{"definition":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","owner":"me","expires":"2099-01-01"}}`)
	if code != 422 || !strings.Contains(body, "maximum flag lifetime") {
		t.Fatalf("max lifetime: %d %s", code, body)
	}
	f.do(t, adm, "PUT", "/api/v1/envs/dev/flags/a", `{"definition":`+flagDef+`}`)
	f.do(t, adm, "PUT", "/api/v1/envs/dev/flags/a", `{"baseVersion":1,"definition":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}`)
	code, body = f.do(t, adm, "GET", "/api/v1/envs/dev/diff?from=1&to=2&format=text", "")
	if code != 200 || !strings.Contains(body, `state: "ENABLED" → "DISABLED"`) {
		t.Fatalf("diff: %d %s", code, body)
	}
	code, body = f.do(t, f.tokens["viewer"], "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"dryRun":true}`)
	if code != 200 || !strings.Contains(body, "disabled-flag-returns") {
		t.Fatalf("dry run: %d %s", code, body)
	}
	if code, _ := f.do(t, f.tokens["viewer"], "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"reason":"x"}`); code != 403 {
		t.Fatalf("viewer rollback: %d", code)
	}
	code, body = f.do(t, f.tokens["editor"], "POST", "/api/v1/envs/dev/rollback", `{"toVersion":1,"reason":"undo"}`)
	if code != 201 || !strings.Contains(body, `"rollbackTo": 1`) {
		t.Fatalf("rollback: %d %s", code, body)
	}
	code, body = f.do(t, f.admin, "POST", "/api/v1/envs/prod/promote", `{"from":"dev","flags":["a"],"reason":"ship"}`)
	if code != 202 || !strings.Contains(body, "promote from dev@3") {
		t.Fatalf("promote to protected: %d %s", code, body)
	}
}
