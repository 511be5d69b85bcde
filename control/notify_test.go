package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/notify"
)

// setupNotify is setup with a webhook dispatcher: f.base points at a control
// plane whose Options.Notify is set.
func setupNotify(t *testing.T) (*fixture, *notify.Dispatcher) {
	t.Helper()
	f := setup(t)
	d, err := notify.New(context.Background(), notify.Options{JetStream: f.js, BaseBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Client: &http.Client{Timeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	s, err := New(Options{Addr: "127.0.0.1:0", Store: f.store, Tokens: f.toks, Logger: zap.New(core), JetStream: f.js, DataDir: t.TempDir(), Signer: f.key, Notify: d})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		defer ccancel()
		_ = d.Close(cctx)
	})
	f.base, f.srv, f.logs = "http://"+s.Addr(), s, logs
	return f, d
}

// hookSink records the events a webhook receives.
type hookSink struct {
	mu     sync.Mutex
	events []notify.Event
	sigs   []string
	bodies [][]byte
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var e notify.Event
	_ = json.Unmarshal(b, &e)
	h.mu.Lock()
	h.events, h.sigs, h.bodies = append(h.events, e), append(h.sigs, r.Header.Get(notify.SignatureHeader)), append(h.bodies, b)
	h.mu.Unlock()
}

// waitTypes waits until the sink got exactly want (event types, in order).
func (h *hookSink) waitTypes(t *testing.T, want ...string) []notify.Event {
	t.Helper()
	var got []notify.Event
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		h.mu.Lock()
		got = append([]notify.Event(nil), h.events...)
		h.mu.Unlock()
		types := []string{}
		for _, e := range got {
			types = append(types, e.Type)
		}
		if fmt.Sprint(types) != fmt.Sprint(want) {
			return fmt.Errorf("received %v, want %v", types, want)
		}
		return nil
	})
	return got
}

func createHook(t *testing.T, f *fixture, env, body string) (id, secret string) {
	t.Helper()
	code, resp := f.do(t, f.admin, "POST", "/api/v1/envs/"+env+"/webhooks", body)
	if code != 201 {
		t.Fatalf("create webhook: %d %s", code, resp)
	}
	var out struct {
		Webhook notify.WebhookInfo
		Secret  string
	}
	if err := json.Unmarshal([]byte(resp), &out); err != nil || out.Secret == "" || out.Webhook.ID == "" {
		t.Fatalf("create webhook answer %s (%v)", resp, err)
	}
	return out.Webhook.ID, out.Secret
}

func TestWebhookRoutes(t *testing.T) {
	f, _ := setupNotify(t)
	id, secret := createHook(t, f, "dev", `{"url":"https://hooks.slack.com/services/T0/B0/SECRETPATH","format":"slack","types":["emergency","change"],"description":"ops channel"}`)
	cases := []struct {
		name, token, method, path, body string
		wantCode                        int
		wantIn                          []string
		wantOut                         []string
	}{
		{"list shows the webhook without its secret and with its URL redacted", f.tokens["admin"], "GET", "/api/v1/envs/dev/webhooks", "", 200,
			[]string{`"id": "` + id + `"`, `"url": "https://hooks.slack.com/services/…"`, `"format": "slack"`, `"types": [` + "\n" + `        "change",` + "\n" + `        "emergency"`, `"description": "ops channel"`},
			[]string{secret, "SECRETPATH"}},
		{"no deliveries yet", f.tokens["admin"], "GET", "/api/v1/envs/dev/webhooks/" + id + "/deliveries", "", 200, []string{`"deliveries": []`}, nil},
		{"an editor cannot list webhooks", f.tokens["editor"], "GET", "/api/v1/envs/dev/webhooks", "", 403, []string{`"code": "forbidden"`}, []string{secret}},
		{"an approver cannot create one", f.tokens["approver"], "POST", "/api/v1/envs/dev/webhooks", `{"url":"https://example.com"}`, 403, []string{`"code": "forbidden"`}, nil},
		{"credentials in the URL are refused", f.tokens["admin"], "POST", "/api/v1/envs/dev/webhooks", `{"url":"https://u:p@example.com/x"}`, 422,
			[]string{`"code": "validation"`, `"field": "url"`, "must not carry credentials"}, nil},
		{"a file URL is refused", f.tokens["admin"], "POST", "/api/v1/envs/dev/webhooks", `{"url":"file:///etc/passwd"}`, 422, []string{`"field": "url"`, `only http and https`}, nil},
		{"an unknown type is refused", f.tokens["admin"], "POST", "/api/v1/envs/dev/webhooks", `{"url":"https://example.com","types":["deploy"]}`, 422, []string{`"field": "types[0]"`}, nil},
		{"an unknown field is refused", f.tokens["admin"], "POST", "/api/v1/envs/dev/webhooks", `{"url":"https://example.com","secret":"mine"}`, 400, []string{`"code": "bad_request"`}, nil},
		{"an unknown environment", f.admin, "GET", "/api/v1/envs/nope/webhooks", "", 404, []string{`"code": "not_found"`}, nil},
		{"another environment does not see it", f.tokens["admin"], "DELETE", "/api/v1/envs/prod/webhooks/" + id, "", 404, []string{`"field": "id"`}, nil},
		{"delete", f.tokens["admin"], "DELETE", "/api/v1/envs/dev/webhooks/" + id, "", 200, []string{`"deleted": "` + id + `"`}, nil},
		{"deleted: deliveries are 404", f.tokens["admin"], "GET", "/api/v1/envs/dev/webhooks/" + id + "/deliveries", "", 404, []string{`"code": "not_found"`}, nil},
		{"deleted: the list is empty", f.tokens["admin"], "GET", "/api/v1/envs/dev/webhooks", "", 200, []string{`"webhooks": []`}, nil},
		{"events: bad type", f.tokens["viewer"], "GET", "/api/v1/envs/dev/events?type=deploy", "", 400, []string{`"field": "type"`}, nil},
		{"events: limit bounded", f.tokens["viewer"], "GET", "/api/v1/envs/dev/events?limit=100000", "", 400, []string{`"field": "limit"`}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, tc.token, tc.method, tc.path, tc.body)
			if code != tc.wantCode {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.wantCode)
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(body, s) {
					t.Errorf("answer lacks %q:\n%s", s, body)
				}
			}
			for _, s := range tc.wantOut {
				if strings.Contains(body, s) {
					t.Errorf("answer contains %q:\n%s", s, body)
				}
			}
		})
	}
	for _, e := range f.logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, secret) || strings.Contains(line, "SECRETPATH") {
			t.Errorf("log leaks the secret or the URL's path: %s", line)
		}
	}
}

func TestWebhookRoutesWithoutDispatcher(t *testing.T) {
	f := setup(t)
	for _, path := range []string{"/api/v1/envs/dev/webhooks", "/api/v1/envs/dev/events"} {
		if code, body := f.do(t, f.admin, "GET", path, ""); code != 501 || !strings.Contains(body, `"code": "not_configured"`) {
			t.Errorf("GET %s without Options.Notify: %d %s", path, code, body)
		}
	}
}

func TestCommitsEmitEvents(t *testing.T) {
	f, _ := setupNotify(t)
	ctx := context.Background()
	now := time.Now().UTC()
	// Business hours that cannot contain now: a one-hour window starting
	// two hours from now, every day.
	night := &config.BusinessHours{TZ: "UTC", Days: "mon-sun", From: now.Add(2 * time.Hour).Format("15:04"), To: now.Add(3 * time.Hour).Format("15:04")}
	if err := f.store.CreateEnv(ctx, config.EnvSettings{Name: "night", BusinessHours: night}); err != nil {
		t.Fatal(err)
	}
	sink := &hookSink{}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	_, devSecret := createHook(t, f, "dev", `{"url":"`+srv.URL+`/dev"}`)
	createHook(t, f, "prod", `{"url":"`+srv.URL+`/prod","types":["approval_needed","emergency"]}`)
	createHook(t, f, "night", `{"url":"`+srv.URL+`/night","types":["out_of_hours"]}`)

	// dev: a plain commit is one change event, signed.
	if code, body := f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/checkout", `{"definition":`+flagDef+`,"reason":"launch"}`); code != 201 {
		t.Fatalf("commit: %d %s", code, body)
	}
	got := sink.waitTypes(t, notify.TypeChange)
	e := got[0]
	if e.ID != "change-dev-1" || e.Env != "dev" || e.Flag != "checkout" || e.Severity != notify.SeverityInfo ||
		e.Title != "dev v1: checkout by editor-bot ("+tokenIDOf(e.Data["author"].(string))+")" || e.Text != "reason: launch" {
		t.Errorf("change event = %+v", e)
	}
	if e.Data["version"] != 1.0 || e.Data["reason"] != "launch" || fmt.Sprint(e.Data["flags"]) != "[checkout]" {
		t.Errorf("change data = %v", e.Data)
	}
	if err := notify.Verify(devSecret, sink.sigs[0], sink.bodies[0], time.Now(), 5*time.Minute); err != nil {
		t.Errorf("signature: %v", err)
	}

	// prod (protected): a write opens a change request → approval_needed;
	// an emergency change → change (filtered out by this webhook) and
	// emergency.
	if code, body := f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/prod/flags/checkout", `{"definition":`+flagDef+`,"reason":"launch prod"}`); code != 202 {
		t.Fatalf("change request: %d %s", code, body)
	}
	if code, body := f.do(t, f.tokens["approver"], "PUT", "/api/v1/envs/prod/flags/kill", `{"definition":`+flagDef+`,"reason":"outage","emergency":true}`); code != 201 {
		t.Fatalf("emergency: %d %s", code, body)
	}
	got = sink.waitTypes(t, notify.TypeChange, notify.TypeApprovalNeeded, notify.TypeEmergency)
	if a := got[1]; a.Env != "prod" || a.Flag != "checkout" || !strings.Contains(a.Title, "waits for an approver") || a.Data["reason"] != "launch prod" {
		t.Errorf("approval_needed = %+v", a)
	}
	if em := got[2]; em.ID != "emergency-prod-1" || em.Severity != notify.SeverityCritical || em.Data["emergency"] != true ||
		!strings.Contains(em.Title, "prod v1: emergency change (no review) of kill by approver-bot") {
		t.Errorf("emergency = %+v", em)
	}

	// night: a commit outside business hours.
	if code, body := f.do(t, f.admin, "PUT", "/api/v1/envs/night/flags/late", `{"definition":`+flagDef+`,"reason":"hotfix"}`); code != 201 {
		t.Fatalf("commit night: %d %s", code, body)
	}
	got = sink.waitTypes(t, notify.TypeChange, notify.TypeApprovalNeeded, notify.TypeEmergency, notify.TypeOutOfHours)
	if o := got[3]; o.Severity != notify.SeverityWarning || o.Env != "night" || !strings.Contains(o.Title, "outside business hours (mon-sun "+night.From+"-"+night.To+" UTC)") {
		t.Errorf("out_of_hours = %+v", o)
	}

	// The events API lists them newest first, with a type filter.
	var list struct{ Events []notify.Event }
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/prod/events", "")
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		list.Events = nil
		_ = json.Unmarshal([]byte(body), &list)
		var types []string
		for _, e := range list.Events {
			types = append(types, e.Type)
		}
		if want := "[emergency change approval_needed]"; fmt.Sprint(types) != want {
			return fmt.Errorf("prod events %v, want %v", types, want)
		}
		return nil
	})
	code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/prod/events?type=approval_needed&limit=5", "")
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list.Events) != 1 || list.Events[0].Type != notify.TypeApprovalNeeded {
		t.Errorf("filtered events: %d %s", code, body)
	}
}

// A webhook that never answers must not slow commits down.
func TestHangingWebhookDoesNotBlockCommits(t *testing.T) {
	f, _ := setupNotify(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	createHook(t, f, "dev", `{"url":"`+srv.URL+`"}`)
	start := time.Now()
	for i := range 20 {
		if code, body := f.do(t, f.tokens["editor"], "PUT", fmt.Sprintf("/api/v1/envs/dev/flags/f%d", i), `{"definition":`+flagDef+`}`); code != 201 {
			t.Fatalf("commit %d: %d %s", i, code, body)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("20 commits took %v with a hanging webhook", took)
	}
	var dl struct{ Deliveries []notify.Delivery }
	code, body := f.do(t, f.tokens["admin"], "GET", "/api/v1/envs/dev/webhooks", "")
	var hooks struct{ Webhooks []notify.WebhookInfo }
	if err := json.Unmarshal([]byte(body), &hooks); code != 200 || err != nil || len(hooks.Webhooks) != 1 {
		t.Fatalf("list: %d %s", code, body)
	}
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		_, body := f.do(t, f.tokens["admin"], "GET", "/api/v1/envs/dev/webhooks/"+hooks.Webhooks[0].ID+"/deliveries?limit=50", "")
		dl.Deliveries = nil
		_ = json.Unmarshal([]byte(body), &dl)
		if len(dl.Deliveries) != 20 {
			return fmt.Errorf("%d deliveries listed, want 20", len(dl.Deliveries))
		}
		if first := dl.Deliveries[len(dl.Deliveries)-1]; first.State != notify.StateSending {
			return fmt.Errorf("the first delivery is %s, want sending (to the hanging receiver)", first.State)
		}
		return nil
	})
	if first := dl.Deliveries[len(dl.Deliveries)-1]; first.EventID != "change-dev-1" {
		t.Errorf("oldest delivery %+v, want change-dev-1", first)
	}
	if newest := dl.Deliveries[0]; newest.EventID != "change-dev-20" || newest.State != notify.StateQueued {
		t.Errorf("newest delivery %+v, want change-dev-20 queued behind the hanging one", newest)
	}
}
