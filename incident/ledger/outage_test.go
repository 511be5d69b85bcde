package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/faultnet"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/proxy"
	flagsync "github.com/pennon-dev/pennon/sync"
	"github.com/pennon-dev/pennon/telemetry"
)

// The sidecar's recorder is what the shipper, sync and the OFREP server
// take.
var (
	_ telemetry.Source      = (*incident.Recorder)(nil)
	_ flagsync.IncidentHook = (*incident.Recorder)(nil)
	_ proxy.IncidentHook    = (*incident.Recorder)(nil)
)

// events collects what the ledger announces.
type events struct {
	mu  sync.Mutex
	all []notify.Event
}

func (e *events) Emit(_ context.Context, ev notify.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) ids() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.all {
		out = append(out, ev.ID)
	}
	return out
}

// plane is a real control plane: embedded JetStream with authorization,
// store, tokens, telemetry ingest (NATS and API), the incident ledger and
// the admin API.
type plane struct {
	js     jetstream.JetStream
	ing    *telemetry.Ingest
	led    *ledger.Ledger
	ev     *events
	api    string
	viewer string // viewer on dev only
	admin  string // admin on every env
	nats   string
}

func startPlane(t *testing.T) *plane {
	t.Helper()
	ctx := context.Background()
	ns := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &plane{js: js, ev: &events{}, nats: ns.ClientURL()}
	p.viewer, _, _ = toks.Create(ctx, "sidecar", map[string]string{"dev": "viewer"}, 0, "test")
	p.admin, _, _ = toks.Create(ctx, "admin", map[string]string{"*": "admin"}, 0, "test")
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	doc, _ := config.Parse(examples.Checkout)
	if _, err := store.Commit(ctx, config.LoadChangeset("dev", doc, "test", "")); err != nil {
		t.Fatal(err)
	}
	p.ing, err = telemetry.OpenIngest(ctx, js, telemetry.IngestOptions{ReportToken: ns.Keys.ReportToken,
		EnvExists: func(ctx context.Context, env string) bool { _, err := store.Env(ctx, env); return err == nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ing.Listen(nc); err != nil {
		t.Fatal(err)
	}
	p.led, err = ledger.Open(ctx, ledger.Options{Ingest: p.ing, JetStream: js, Notify: p.ev, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := flagsync.NewRegistry(nc, flagsync.RegistryOptions{Verifier: ns.Keys, Envs: store.EnvNames, LostAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	api, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, Sidecars: reg, JetStream: js, NATS: ns.Keys,
		Signer: key, Trust: sign.NewTrust(key.Public()), Telemetry: p.ing, Incidents: p.led})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Listen(); err != nil {
		t.Fatal(err)
	}
	p.api = "http://" + api.Addr()
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = api.Serve(rctx) }()
	go func() { defer wg.Done(); flagsync.RunHeartbeats(rctx, nc, store, 50*time.Millisecond, zap.NewNop()) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		p.led.Close()
		_ = p.ing.Close()
		reg.Close()
	})
	return p
}

// get returns the body of an admin API GET.
func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type listed struct {
	Incidents []struct {
		incident.Record
		Summary string `json:"summary"`
	} `json:"incidents"`
}

func list(t *testing.T, url, token string) listed {
	t.Helper()
	code, b := get(t, url, token)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, b)
	}
	var l listed
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
	return l
}

func fallback(r incident.Record, name string) uint64 {
	for _, f := range r.Fallbacks {
		if f.Name == name {
			return f.Answers
		}
	}
	return 0
}

// TestNATSOutageIsRecordedAndRecovers cuts a sidecar's NATS (and, for a
// while, its control plane): a push_lost record reaches the control plane
// over the API while NATS is still down, counts the fail-closed answers
// served meanwhile, and closes recovered when push is back. The records
// survive a restart of the ledger.
func TestNATSOutageIsRecordedAndRecovers(t *testing.T) {
	p := startPlane(t)
	natsNet, err := faultnet.New(strings.TrimPrefix(p.nats, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer natsNet.Close()
	apiNet, err := faultnet.New(strings.TrimPrefix(p.api, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer apiNet.Close()

	remote, err := flagsync.NewRemote(flagsync.RemoteOptions{Env: "dev", ServerURL: "http://" + apiNet.Addr(), NATSURL: "nats://" + natsNet.Addr(),
		Token: p.viewer, ID: "car-1", PollInterval: 100 * time.Millisecond, SilenceAfter: 300 * time.Millisecond,
		LeaseFor: 200 * time.Millisecond, HTTPTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: remote, CacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	rec, err := incident.NewRecorder(incident.RecorderOptions{Env: "dev", Source: remote.ID(), PushExpected: true,
		Load: srv.IncidentLoad, Errors: srv.IncidentErrors, Sync: remote.IncidentConditions, QuietFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	remote.SetIncidents(rec)
	srv.SetIncidents(rec)
	ship, err := telemetry.NewShipper(telemetry.TransportFunc(remote.SendTelemetry),
		telemetry.ShipperOptions{Env: "dev", Sidecar: remote.ID(), Interval: 100 * time.Millisecond, SendTimeout: time.Second}, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = remote.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ctx) }()
	go func() { defer wg.Done(); ship.Run(ctx) }()
	defer func() { cancel(); wg.Wait(); http.DefaultClient.CloseIdleConnections() }()

	syncState := func(want string) func() error {
		return func() error {
			if st := remote.Status().(flagsync.RemoteStatus); st.State != want {
				return fmt.Errorf("sync state %s, want %s", st.State, want)
			}
			return nil
		}
	}
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, syncState(flagsync.StatePush))

	// Everything down: push is lost, and the always-fresh flag (failMode
	// closed) is answered with its safe variant.
	natsNet.Cut()
	apiNet.Cut()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, syncState(flagsync.StatePolling))
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if remote.Status().(flagsync.RemoteStatus).LeaseValid {
			return fmt.Errorf("freshness lease still valid")
		}
		return nil
	})
	const answers = 5
	for range answers {
		resp, err := http.Post("http://"+srv.Addr()+"/ofrep/v1/evaluate/flags/payment-api-v2", "application/json",
			strings.NewReader(`{"context":{"targetingKey":"u1","email":"ann@pennon.dev"}}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `"pennonFailMode":"closed"`) || !strings.Contains(string(b), `"variant":"off"`) {
			t.Fatalf("want the fail-closed answer during the outage, got %s", b)
		}
	}

	// The API comes back, NATS stays down: the record arrives over the API.
	apiNet.Restore()
	envURL := p.api + "/api/v1/envs/dev/incidents"
	var open incident.Record
	checkfor.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		for _, it := range list(t, envURL, p.viewer).Incidents {
			if it.Kind == incident.KindPushLost && it.Status == incident.StatusOpen && fallback(it.Record, incident.FallbackFailClosed) == answers {
				open = it.Record
				return nil
			}
		}
		return fmt.Errorf("no open push_lost record counting %d fail-closed answers yet", answers)
	})
	if remote.Status().(flagsync.RemoteStatus).NATS {
		t.Fatal("NATS reconnected before the record arrived: it did not come over the API")
	}
	if open.Env != "dev" || open.Source != "car-1" || open.AtStart.Version != 1 || open.AtStart.Hash == "" || fallback(open, incident.FallbackPolling) == 0 && open.Fallbacks[0].Name != incident.FallbackPolling {
		t.Fatalf("open record: %+v", open)
	}

	// NATS back: push resumes and the record closes, recovered.
	natsNet.Restore()
	checkfor.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		for _, it := range list(t, envURL, p.viewer).Incidents {
			if it.ID != open.ID {
				continue
			}
			if it.Status != incident.StatusRecovered || !it.Recovered || it.End == nil {
				return fmt.Errorf("record %s: status %s", it.ID, it.Status)
			}
			if got := fallback(it.Record, incident.FallbackFailClosed); got != answers {
				t.Fatalf("fail-closed answers %d, want %d: %+v", got, answers, it.Record)
			}
			if !strings.HasPrefix(it.Summary, "push_lost (") || !strings.Contains(it.Summary, ": recovered after ") ||
				!strings.Contains(it.Summary, "fail-closed 5") || !strings.Contains(it.Summary, "; v1") {
				t.Fatalf("summary %q", it.Summary)
			}
			return nil
		}
		return fmt.Errorf("record %s gone", open.ID)
	})

	// Newest first, across envs for a token that sees them; an env viewer
	// does not see the control plane's own records, nor other envs.
	all := list(t, p.api+"/api/v1/incidents", p.admin).Incidents
	for i := 1; i < len(all); i++ {
		if all[i].Start.After(all[i-1].Start) {
			t.Fatalf("not newest first: %v before %v", all[i-1].Start, all[i].Start)
		}
	}
	for _, it := range list(t, p.api+"/api/v1/incidents", p.viewer).Incidents {
		if it.Env != "dev" {
			t.Fatalf("viewer of dev sees %+v", it.Record)
		}
	}
	if code, b := get(t, p.api+"/api/v1/envs/dev/incidents?limit=0", p.viewer); code != 400 || !strings.Contains(string(b), `"field": "limit"`) {
		t.Fatalf("limit=0: %d %s", code, b)
	}
	if code, b := get(t, p.api+"/api/v1/envs/nope/incidents", p.admin); code != 404 {
		t.Fatalf("unknown env: %d %s", code, b)
	}

	// Opened and closed were announced once each.
	want := map[string]int{"incident/" + open.ID + "/opened": 0, "incident/" + open.ID + "/closed": 0}
	for _, id := range p.ev.ids() {
		if _, ok := want[id]; ok {
			want[id]++
		}
	}
	for id, n := range want {
		if n != 1 {
			t.Fatalf("event %s emitted %d times (all: %v)", id, n, p.ev.ids())
		}
	}

	// A restarted ledger keeps the records (bucket + stream position).
	led2, err := ledger.Open(context.Background(), ledger.Options{Ingest: p.ing, JetStream: p.js, Notify: notify.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer led2.Close()
	<-led2.CaughtUp()
	var kept *incident.Record
	for _, r := range led2.List(ledger.Filter{}) {
		if r.ID == open.ID {
			kept = &r
		}
	}
	if kept == nil || !kept.Recovered || fallback(*kept, incident.FallbackFailClosed) != answers {
		t.Fatalf("after a restart: %+v", kept)
	}
}
