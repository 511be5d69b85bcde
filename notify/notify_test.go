package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsrun"
)

// Every dispatcher goroutine (router, one worker per webhook, delivery
// connections) must be gone once Close returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")) // idle conns of httptest servers
}

func testJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc := natsrun.ConnectTest(t, natsrun.StartTest(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// newTestDispatcher starts a dispatcher with millisecond backoffs and closes
// it when the test ends.
func newTestDispatcher(t *testing.T, js jetstream.JetStream, o Options) *Dispatcher {
	t.Helper()
	o.JetStream = js
	if o.BaseBackoff == 0 {
		o.BaseBackoff, o.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
	d, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	return d
}

// received is one request a test receiver saw.
type received struct {
	body    []byte
	sig     string
	eventID string
	attempt string
}

// receiver answers each request with the next status of codes (the last
// one repeats) and records what it got.
type receiver struct {
	mu    sync.Mutex
	got   []received
	codes []int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.got = append(rc.got, received{body: body, sig: r.Header.Get(SignatureHeader), eventID: r.Header.Get("Pennon-Event-Id"), attempt: r.Header.Get("Pennon-Delivery-Attempt")})
	code := rc.codes[min(len(rc.got), len(rc.codes))-1]
	rc.mu.Unlock()
	w.WriteHeader(code)
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func lastDelivery(t *testing.T, d *Dispatcher, env, id string, final bool) Delivery {
	t.Helper()
	var out Delivery
	checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		list, err := d.Deliveries(context.Background(), env, id, 10)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return errors.New("no delivery yet")
		}
		out = list[0]
		if final && (out.State == StateQueued || out.State == StateSending || out.State == StateRetrying) {
			return fmt.Errorf("delivery still %s after %d attempts", out.State, out.Attempts)
		}
		return nil
	})
	return out
}

func TestDeliveryOutcomes(t *testing.T) {
	js := testJS(t)
	d := newTestDispatcher(t, js, Options{MaxAttempts: 4})
	event := Event{ID: "ev-1", Type: TypeChange, Env: "prod", Time: time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC), Severity: SeverityInfo,
		Title: "prod: version 7 by alice", Data: map[string]any{"version": 7.0, "author": "alice"}}
	cases := []struct {
		name         string
		codes        []int
		wantState    string
		wantAttempts int
		wantStatus   int
	}{
		{"two 503s then 200: retried and delivered", []int{503, 503, 200}, StateDelivered, 3, 200},
		{"408 and 429 are retried", []int{408, 429, 204}, StateDelivered, 3, 204},
		{"400 is not retried", []int{400, 200}, StateFailed, 1, 400},
		{"410 is not retried", []int{410}, StateFailed, 1, 410},
		{"a redirect is not followed", []int{302, 200}, StateFailed, 1, 302},
		{"always 500: attempts bounded", []int{500}, StateFailed, 4, 500},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := fmt.Sprintf("env%d", i)
			rc := &receiver{codes: tc.codes}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			secret, info, err := d.CreateWebhook(context.Background(), env, WebhookSpec{URL: srv.URL + "/hook"}, "admin (t1)")
			if err != nil {
				t.Fatal(err)
			}
			e := event
			e.Env = env
			d.Emit(context.Background(), e)
			got := lastDelivery(t, d, env, info.ID, true)
			if got.State != tc.wantState || got.Attempts != tc.wantAttempts || got.StatusCode != tc.wantStatus {
				t.Fatalf("delivery = %s after %d attempts (status %d, error %q), want %s after %d (status %d)",
					got.State, got.Attempts, got.StatusCode, got.Error, tc.wantState, tc.wantAttempts, tc.wantStatus)
			}
			if got.EventID != "ev-1" || got.EventType != TypeChange || got.NextRetryAt != nil {
				t.Errorf("delivery record = %+v", got)
			}
			reqs := rc.requests()
			if len(reqs) != tc.wantAttempts {
				t.Fatalf("receiver saw %d requests, want %d", len(reqs), tc.wantAttempts)
			}
			wantEnvBody, _ := json.Marshal(e)
			for n, r := range reqs {
				if string(r.body) != string(wantEnvBody) {
					t.Errorf("attempt %d body = %s, want %s", n+1, r.body, wantEnvBody)
				}
				if err := Verify(secret, r.sig, r.body, time.Now(), 5*time.Minute); err != nil {
					t.Errorf("attempt %d signature %q: %v", n+1, r.sig, err)
				}
				if r.eventID != "ev-1" || r.attempt != fmt.Sprint(n+1) {
					t.Errorf("attempt %d headers: event %q attempt %q", n+1, r.eventID, r.attempt)
				}
			}
		})
	}
}

func TestSlackFormat(t *testing.T) {
	js := testJS(t)
	d := newTestDispatcher(t, js, Options{})
	rc := &receiver{codes: []int{200}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	_, info, err := d.CreateWebhook(context.Background(), "prod", WebhookSpec{URL: srv.URL, Format: FormatSlack, Types: []string{TypeEmergency}}, "")
	if err != nil {
		t.Fatal(err)
	}
	// A change is filtered out; the emergency is delivered.
	d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: "ignored"})
	d.Emit(context.Background(), Event{ID: "e2", Type: TypeEmergency, Env: "prod", Severity: SeverityCritical, Flag: "checkout",
		Title: "prod: emergency change <v9> by bob", Text: "reason: outage & rollback",
		Data: map[string]any{"version": 9.0, "author": "bob", "flags": []string{"checkout"}}})
	got := lastDelivery(t, d, "prod", info.ID, true)
	if got.State != StateDelivered {
		t.Fatalf("delivery %+v", got)
	}
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver saw %d requests, want 1 (the change is filtered out)", len(reqs))
	}
	var body map[string]string
	if err := json.Unmarshal(reqs[0].body, &body); err != nil || len(body) != 1 {
		t.Fatalf("slack body %s: want exactly {\"text\": ...} (%v)", reqs[0].body, err)
	}
	want := ":rotating_light: *prod: emergency change &lt;v9&gt; by bob*\nreason: outage &amp; rollback\n_env prod · emergency · flag checkout · author bob · version 9_"
	if body["text"] != want {
		t.Errorf("slack text =\n%s\nwant\n%s", body["text"], want)
	}
}

// A receiver that never answers must not slow Emit (and so a commit) down:
// Emit returns at once, the queue is bounded, the excess is counted as
// dropped.
func TestHangingReceiverNeverBlocksEmit(t *testing.T) {
	js := testJS(t)
	reg := prometheus.NewRegistry()
	release := make(chan struct{})
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	d := newTestDispatcher(t, js, Options{QueueSize: 4, Metrics: reg, Client: &http.Client{Timeout: time.Minute}})
	if _, _, err := d.CreateWebhook(context.Background(), "prod", WebhookSpec{URL: srv.URL}, ""); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const n = 2000
	for i := range n {
		d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: fmt.Sprint("change ", i)})
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("%d Emits took %v with a hanging receiver; Emit must not wait", n, took)
	}
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		dropped := testutil.ToFloat64(d.mDeliveries.WithLabelValues("prod", StateDropped)) + testutil.ToFloat64(d.mDropped.WithLabelValues("intake_full"))
		if dropped < n-10 {
			return fmt.Errorf("%v dropped so far", dropped)
		}
		return nil
	})
	if c := calls.Load(); c != 1 {
		t.Errorf("receiver got %d requests, want 1 (the worker is stuck on the first)", c)
	}
	// Shutdown with a short deadline abandons the in-flight delivery.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v past its 200ms deadline", took)
	}
	if a := testutil.ToFloat64(d.mDeliveries.WithLabelValues("prod", StateAbandoned)); a < 1 {
		t.Errorf("abandoned = %v, want the in-flight and queued deliveries", a)
	}
}

func TestCloseDrainsQueuedDeliveries(t *testing.T) {
	js := testJS(t)
	rc := &receiver{codes: []int{200}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := newTestDispatcher(t, js, Options{})
	if _, _, err := d.CreateWebhook(context.Background(), "prod", WebhookSpec{URL: srv.URL}, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: fmt.Sprint(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(rc.requests()); n != 20 {
		t.Errorf("receiver got %d deliveries after a graceful Close, want 20", n)
	}
	d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod"})
	if v := testutil.ToFloat64(d.mDropped.WithLabelValues("closed")); v != 1 {
		t.Errorf("emit after Close: dropped{closed} = %v, want 1", v)
	}
}

func TestSecretNeverLoggedNorListed(t *testing.T) {
	js := testJS(t)
	core, logs := observer.New(zap.DebugLevel)
	rc := &receiver{codes: []int{500, 200}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := newTestDispatcher(t, js, Options{Logger: zap.New(core), MaxAttempts: 1})
	secret, info, err := d.CreateWebhook(context.Background(), "prod", WebhookSpec{URL: srv.URL + "/services/T0/B0/XSECRETPATH?token=q", Description: "ops"}, "admin (t1)")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "whsec_") || len(secret) < 40 {
		t.Fatalf("secret %q: want whsec_ and 32 random bytes", secret)
	}
	d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: "a"})
	lastDelivery(t, d, "prod", info.ID, true) // failed: logs "failing"
	d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: "b"})
	checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if len(rc.requests()) < 2 {
			return errors.New("second delivery not yet made")
		}
		return nil
	})
	lastDelivery(t, d, "prod", info.ID, true)
	list, err := d.Webhooks(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	one, err := d.Webhook(context.Background(), "prod", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := d.Deliveries(context.Background(), "prod", info.ID, 10)
	shown, _ := json.Marshal(map[string]any{"list": list, "one": one, "info": info, "deliveries": dl})
	var logged strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&logged, "%s %v\n", e.Message, e.ContextMap())
	}
	for what, text := range map[string]string{"API answers": string(shown), "logs": logged.String()} {
		for _, leak := range []string{secret, "XSECRETPATH", "token=q"} {
			if strings.Contains(text, leak) {
				t.Errorf("%s contain %q:\n%s", what, leak, text)
			}
		}
	}
	if want := srv.URL + "/services/…"; list[0].URL != want {
		t.Errorf("listed URL = %q, want %q", list[0].URL, want)
	}
	for _, msg := range []string{"webhook created", "webhook deliveries failing", "webhook deliveries succeed again"} {
		if logs.FilterMessage(msg).Len() != 1 {
			t.Errorf("log %q: %d entries, want exactly 1", msg, logs.FilterMessage(msg).Len())
		}
	}
}

func TestEventsListSurvivesRestart(t *testing.T) {
	js := testJS(t)
	d := newTestDispatcher(t, js, Options{})
	for i := 1; i <= 5; i++ {
		d.Emit(context.Background(), Event{ID: fmt.Sprint("e", i), Type: TypeChange, Env: "prod", Title: fmt.Sprint("change ", i)})
	}
	d.Emit(context.Background(), Event{ID: "other", Type: TypeChange, Env: "staging", Title: "elsewhere"})
	d.Emit(context.Background(), Event{ID: "e5", Type: TypeChange, Env: "prod", Title: "a replica's duplicate"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d2 := newTestDispatcher(t, js, Options{})
	cases := []struct {
		env   string
		limit int
		want  []string
	}{
		{"prod", 10, []string{"e5", "e4", "e3", "e2", "e1"}},
		{"prod", 2, []string{"e5", "e4"}},
		{"staging", 10, []string{"other"}},
		{"nowhere", 10, []string{}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.env, tc.limit), func(t *testing.T) {
			list, err := d2.Events(context.Background(), tc.env, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, e := range list {
				ids = append(ids, e.ID)
				if e.Env != tc.env || e.Severity != SeverityInfo || e.Time.IsZero() {
					t.Errorf("event %+v: env, severity or time not filled", e)
				}
			}
			if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
				t.Errorf("events = %v, want %v (newest first)", ids, tc.want)
			}
		})
	}
}

func TestWebhookSpecValidation(t *testing.T) {
	js := testJS(t)
	d := newTestDispatcher(t, js, Options{})
	cases := []struct {
		name      string
		spec      WebhookSpec
		wantField string
	}{
		{"empty url", WebhookSpec{}, "url"},
		{"ftp", WebhookSpec{URL: "ftp://example.com/x"}, "url"},
		{"no host", WebhookSpec{URL: "https:///x"}, "url"},
		{"credentials", WebhookSpec{URL: "https://user:pw@example.com/x"}, "url"},
		{"relative", WebhookSpec{URL: "/hook"}, "url"},
		{"format", WebhookSpec{URL: "https://example.com", Format: "xml"}, "format"},
		{"type", WebhookSpec{URL: "https://example.com", Types: []string{TypeChange, "changes"}}, "types[1]"},
		{"ok", WebhookSpec{URL: "https://example.com/hook", Types: []string{TypeIncident, TypeChange, TypeChange}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, info, err := d.CreateWebhook(context.Background(), "prod", tc.spec, "")
			var fe *FieldError
			switch {
			case tc.wantField == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantField == "":
				if info.Format != FormatJSON || fmt.Sprint(info.Types) != "[change incident]" {
					t.Errorf("defaults: %+v", info)
				}
			case !errors.As(err, &fe) || fe.Field != tc.wantField:
				t.Fatalf("error %v, want a FieldError on %s", err, tc.wantField)
			}
		})
	}
	list, _ := d.Webhooks(context.Background(), "prod")
	if len(list) != 1 {
		t.Errorf("%d webhooks stored, want only the valid one", len(list))
	}
	if err := d.DeleteWebhook(context.Background(), "prod", list[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteWebhook(context.Background(), "prod", list[0].ID, ""); !errors.Is(err, ErrWebhookNotFound) {
		t.Errorf("second delete: %v, want ErrWebhookNotFound", err)
	}
	if _, err := d.Deliveries(context.Background(), "staging", list[0].ID, 5); !errors.Is(err, ErrWebhookNotFound) {
		t.Errorf("deliveries of a deleted webhook: %v", err)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"x"}`)
	good := Sign("s3cret", now, body)
	cases := []struct {
		name   string
		secret string
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"valid", "s3cret", good, body, now, nil},
		{"valid within tolerance", "s3cret", good, body, now.Add(4 * time.Minute), nil},
		{"other secret", "other", good, body, now, ErrSignatureMismatch},
		{"body changed", "s3cret", good, []byte(`{"id":"y"}`), now, ErrSignatureMismatch},
		{"too old", "s3cret", good, body, now.Add(6 * time.Minute), ErrSignatureExpired},
		{"garbage", "s3cret", "sha256=abc", body, now, ErrSignatureMalformed},
		{"timestamp swapped", "s3cret", strings.Replace(good, "t=1800000000", "t=1800000300", 1), body, now, ErrSignatureMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := Verify(tc.secret, tc.header, tc.body, tc.at, 5*time.Minute); !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"https://hooks.slack.com/services/T0/B0/XYZ": "https://hooks.slack.com/services/…",
		"https://example.com/pennon":                 "https://example.com/pennon",
		"https://example.com":                        "https://example.com",
		"http://example.com:8080/a?key=1":            "http://example.com:8080/a/…",
		"::":                                         "…",
	}
	for in, want := range cases {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// With NATS gone, events still reach the webhooks the dispatcher last knew
// (each list read that fails is not retried per event), and Close returns
// within its deadline although nothing can be stored.
func TestNATSOutageDeliversToKnownWebhooksAndClosesOnTime(t *testing.T) {
	ns := natsrun.StartTest(t)
	js, err := jetstream.New(natsrun.ConnectTest(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{codes: []int{200}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := newTestDispatcher(t, js, Options{HooksTTL: 20 * time.Millisecond})
	if _, _, err := d.CreateWebhook(context.Background(), "prod", WebhookSpec{URL: srv.URL}, ""); err != nil {
		t.Fatal(err)
	}
	d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: "before"})
	checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if len(rc.requests()) != 1 {
			return errors.New("first delivery not made")
		}
		return nil
	})
	ns.Shutdown()
	ns.WaitForShutdown()
	start := time.Now()
	for i := range 5 {
		d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: fmt.Sprint("during ", i)})
	}
	checkfor.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 6 {
			return fmt.Errorf("%d deliveries, want 6", n)
		}
		return nil
	})
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("5 events took %v to deliver during the outage: list reads are retried per event", took)
	}
	for i := range 50 {
		d.Emit(context.Background(), Event{Type: TypeChange, Env: "prod", Title: fmt.Sprint("late ", i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start = time.Now()
	_ = d.Close(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %v with a 1 s deadline and NATS down", took)
	}
}
