package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage/delta"
)

type rig struct {
	js  jetstream.JetStream
	ing *telemetry.Ingest
	seq map[string]uint64 // per sidecar
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ing, err := telemetry.OpenIngest(context.Background(), js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{js: js, ing: ing, seq: map[string]uint64{}}
}

// send stores one usage batch from sidecar of env ending at to.
func (r *rig) send(t *testing.T, env, sidecar string, to time.Time, p delta.Payload) {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	r.seq[env+sidecar]++
	b := telemetry.Batch{Kind: telemetry.KindUsage, Env: env, Sidecar: sidecar, Boot: "00c0ffee", Seq: r.seq[env+sidecar],
		From: to.Add(-10 * time.Second), To: to, Data: data}
	if err := r.ing.Accept(context.Background(), b, "test"); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) open(t *testing.T, o Options) *Aggregator {
	t.Helper()
	o.JetStream, o.Ingest = r.js, r.ing
	a, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// waitApplied polls until a applied through the usage stream's last
// sequence.
func waitApplied(t *testing.T, r *rig, a *Aggregator) {
	t.Helper()
	s, err := r.js.Stream(context.Background(), telemetry.StreamName(telemetry.KindUsage))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Applied() < info.State.LastSeq {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d of %d batches after 10s", a.Applied(), info.State.LastSeq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// crash stops a without writing what it has not written, as a killed
// process would.
func (a *Aggregator) crash() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.follower.Stop()
	close(a.stop)
	a.wg.Wait()
}

func summary(t *testing.T, a *Aggregator, env string) string {
	t.Helper()
	u, err := a.FlagUsage(env, 1)
	if err != nil {
		t.Fatal(err)
	}
	out := ""
	for _, k := range []string{"checkout", "banner"} {
		f := u[k]
		out += fmt.Sprintf("%s: 24h=%d 7d=%d variants=%v apps=%v errors=%v day=%d; ", k, f.Last24h, f.Last7d, f.Variants24h, f.Apps, f.Errors24h, f.Days[0].Evaluations)
	}
	_, tot := a.Overview(env)
	return out + fmt.Sprintf("total=%d unknown=%d sidecars=%v", tot.Evaluations, tot.UnknownFlags, tot.Sidecars)
}

// TestAggregatorRestartsCountExactly applies batches, restarts the
// aggregator three ways (gracefully; killed after writing rollups but not
// the cursor; killed before writing anything) and checks every count is
// the sum of what was sent, once.
func TestAggregatorRestartsCountExactly(t *testing.T) {
	r := newRig(t)
	now := time.Now().UTC()
	batch := delta.Payload{
		Counts: []delta.Count{
			{Flag: "checkout", Variant: "on", Reason: "TARGETING_MATCH", N: 7},
			{Flag: "checkout", Variant: "off", Reason: "DEFAULT", N: 3},
			{Flag: "banner", Reason: "ERROR", Code: "PARSE_ERROR", N: 2},
			{Reason: "ERROR", Code: "FLAG_NOT_FOUND", N: 1},
		},
		Apps: []delta.AppCount{{App: "web", Flag: "checkout", N: 4}},
	}
	want := func(n uint64) string {
		return fmt.Sprintf("checkout: 24h=%d 7d=%d variants=map[off:%d on:%d] apps=map[web:%d] errors=map[] day=%d; "+
			"banner: 24h=%d 7d=%d variants=map[] apps=map[] errors=map[PARSE_ERROR:%d] day=%d; total=%d unknown=%d sidecars=map[s1:%d s2:%d]",
			10*n, 10*n, 3*n, 7*n, 4*n, 10*n, 2*n, 2*n, 2*n, 2*n, 13*n, n, 13*n-13*(n/2), 13*(n/2))
	}
	sent := uint64(0)
	sendSome := func(k int) {
		for range k {
			sent++
			sc := "s1"
			if sent%2 == 0 {
				sc = "s2"
			}
			r.send(t, "dev", sc, now, batch)
		}
	}

	a := r.open(t, Options{FlushEvery: time.Hour})
	sendSome(4)
	waitApplied(t, r, a)
	if got := summary(t, a, "dev"); got != want(sent) {
		t.Fatalf("first run:\n got %s\nwant %s", got, want(sent))
	}

	steps := []struct {
		name string
		stop func(t *testing.T, a *Aggregator)
	}{
		{"graceful close", func(t *testing.T, a *Aggregator) {
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"killed after writing rollups, before the cursor", func(t *testing.T, a *Aggregator) {
			old := a.flushedCursor()
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			// The rollups are written through the newest batch; put the
			// cursor back where it was, as if the process died between.
			if _, err := a.st.Put(context.Background(), "cursor", fmt.Appendf(nil, "%d", old)); err != nil {
				t.Fatal(err)
			}
			a.crash()
		}},
		{"killed before writing anything", func(t *testing.T, a *Aggregator) { a.crash() }},
	}
	for _, st := range steps {
		sendSome(3)
		waitApplied(t, r, a)
		st.stop(t, a)
		sendSome(2) // while no aggregator runs
		a = r.open(t, Options{FlushEvery: time.Hour})
		waitApplied(t, r, a)
		if got := summary(t, a, "dev"); got != want(sent) {
			t.Fatalf("after %s:\n got %s\nwant %s", st.name, got, want(sent))
		}
	}
	// The minute series adds up to the same total.
	pts, err := a.Series(context.Background(), "dev", "checkout", Minute, now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, p := range pts {
		n += p.Evaluations
	}
	if n != 10*sent {
		t.Errorf("minute series sums to %d, want %d", n, 10*sent)
	}
}

func TestCompare(t *testing.T) {
	cases := []struct {
		name             string
		window, baseline map[string]uint64
		shifted          bool
	}{
		{"same shares", map[string]uint64{"on": 500, "off": 500}, map[string]uint64{"on": 5000, "off": 5000}, false},
		{"small noise", map[string]uint64{"on": 520, "off": 480}, map[string]uint64{"on": 5000, "off": 5000}, false},
		{"50/50 to 90/10", map[string]uint64{"on": 900, "off": 100}, map[string]uint64{"on": 5000, "off": 5000}, true},
		{"a new variant", map[string]uint64{"on": 400, "off": 400, "beta": 200}, map[string]uint64{"on": 5000, "off": 5000}, true},
		{"one variant only", map[string]uint64{"on": 900}, map[string]uint64{"on": 5000}, false},
	}
	for _, c := range cases {
		s := Compare(c.window, c.baseline)
		if got := s.PValue < 0.001 && s.Effect >= 0.1; got != c.shifted {
			t.Errorf("%s: shifted = %v (chi2 %.2f, p %.3g, V %.3f), want %v", c.name, got, s.ChiSquare, s.PValue, s.Effect, c.shifted)
		}
	}
}

type events struct{ got chan notify.Event }

func (e events) Emit(_ context.Context, ev notify.Event) { e.got <- ev }

// TestAnomalyOnlyWithoutChange: three flags shift from 50/50 to 90/10 in
// the last window. "steady" was last changed 30 h ago: an anomaly.
// "edited" was changed 2 h ago, "dependent" has a prerequisite changed 2 h
// ago: both shifts are explained, so no anomaly.
func TestAnomalyOnlyWithoutChange(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	now := time.Now().UTC()
	var clock atomic.Int64
	clock.Store(now.Add(-30 * time.Hour).UnixNano())
	store, err := config.OpenStore(ctx, r.js, config.StoreOptions{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	flag := func(extra string) json.RawMessage {
		return json.RawMessage(`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"` + extra + `}`)
	}
	put := func(keys ...string) {
		cs := &config.Changeset{Env: "prod", Author: "test"}
		for _, k := range keys {
			def := flag("")
			if k == "dependent" {
				def = flag(`,"prerequisites":{"gate":"on"}`)
			}
			head, err := store.Head(ctx, "prod")
			if err != nil {
				t.Fatal(err)
			}
			cs.Changes = append(cs.Changes, config.Change{Flag: k, Op: config.OpPut, Definition: def, BaseVersion: head.FlagVersion(k)})
		}
		if _, err := store.Commit(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	put("steady", "edited", "gate", "dependent")
	clock.Store(now.Add(-2 * time.Hour).UnixNano())
	put("edited")
	put("gate")

	for h := 20; h >= 3; h-- { // baseline: 50/50
		var p delta.Payload
		for _, k := range []string{"steady", "edited", "dependent"} {
			p.Counts = append(p.Counts, delta.Count{Flag: k, Variant: "on", Reason: "SPLIT", N: 50}, delta.Count{Flag: k, Variant: "off", Reason: "SPLIT", N: 50})
		}
		r.send(t, "prod", "s1", now.Add(-time.Duration(h)*time.Hour), p)
	}
	var p delta.Payload // window: 90/10
	for _, k := range []string{"steady", "edited", "dependent"} {
		p.Counts = append(p.Counts, delta.Count{Flag: k, Variant: "on", Reason: "SPLIT", N: 450}, delta.Count{Flag: k, Variant: "off", Reason: "SPLIT", N: 50})
	}
	r.send(t, "prod", "s1", now.Add(-2*time.Minute), p)

	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	ev := events{got: make(chan notify.Event, 10)}
	a := r.open(t, Options{Changes: store, Emitter: ev, Logger: zap.New(core), Metrics: reg,
		Anomaly: AnomalyOptions{Every: time.Hour}})
	waitApplied(t, r, a)
	a.CheckAnomalies(ctx)
	a.CheckAnomalies(ctx) // still open: not raised twice

	got := a.Anomalies("prod")
	if len(got) != 1 || got[0].Flag != "steady" || got[0].Window["on"] != 450 || got[0].Baseline["on"] != 900 || !got[0].Closed.IsZero() {
		t.Fatalf("anomalies = %+v; want one open for steady with window on=450 and baseline on=900", got)
	}
	select {
	case e := <-ev.got:
		if e.Type != notify.TypeAnomaly || e.Flag != "steady" || e.Env != "prod" || e.Title != "steady: served distribution shifted without a change" {
			t.Errorf("event = %+v", e)
		}
	default:
		t.Fatal("no anomaly event emitted")
	}
	if len(ev.got) != 0 {
		t.Errorf("%d more events; want one per anomaly", len(ev.got))
	}
	if n := testutil.ToFloat64(a.anom.mTotal.WithLabelValues("prod")); n != 1 {
		t.Errorf("pennon_flag_anomalies_total = %v, want 1", n)
	}
	if n := testutil.ToFloat64(a.anom.mOpen.WithLabelValues("prod")); n != 1 {
		t.Errorf("pennon_flag_anomalies_open = %v, want 1", n)
	}
	if n := logs.FilterMessage("flag distribution shifted without a change").Len(); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}

	// A change to the flag now explains the shift: the anomaly closes.
	clock.Store(time.Now().UnixNano())
	put("steady")
	a.CheckAnomalies(ctx)
	got = a.Anomalies("prod")
	if len(got) != 1 || got[0].Closed.IsZero() {
		t.Fatalf("after a change to steady: %+v; want it closed", got)
	}
	if n := testutil.ToFloat64(a.anom.mOpen.WithLabelValues("prod")); n != 0 {
		t.Errorf("pennon_flag_anomalies_open = %v, want 0", n)
	}
}

// TestOverviewAddsUp reads the overview while batches are being applied:
// every answer's totals are exactly its flags' 24-hour counts plus the
// unknown keys, however the reads and the applies interleave.
func TestOverviewAddsUp(t *testing.T) {
	r := newRig(t)
	a := r.open(t, Options{})
	now := time.Now().UTC()
	batch := delta.Payload{Counts: []delta.Count{
		{Flag: "checkout", Variant: "on", Reason: "TARGETING_MATCH", N: 7},
		{Flag: "banner", Variant: "shown", Reason: "STATIC", N: 2},
		{Reason: "ERROR", Code: "FLAG_NOT_FOUND", N: 1},
	}}
	data, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	const batches = 60
	sent := make(chan error, 1)
	go func() { // owned by the test: it waits for sent before returning
		for seq := uint64(1); seq <= batches; seq++ {
			b := telemetry.Batch{Kind: telemetry.KindUsage, Env: "dev", Sidecar: "s1", Boot: "00c0ffee", Seq: seq,
				From: now.Add(-10 * time.Second), To: now, Data: data}
			if err := r.ing.Accept(context.Background(), b, "test"); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	reads := 0
	for finished := false; !finished; reads++ {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatal(err)
			}
			waitApplied(t, r, a)
			finished = true
		default:
		}
		flags, tot := a.Overview("dev")
		sum := tot.UnknownFlags
		for _, u := range flags {
			sum += u.Last24h
		}
		if sum != tot.Evaluations || tot.Sidecars["s1"] != tot.Evaluations {
			if !finished {
				<-sent // the sender stops before the rig goes
			}
			t.Fatalf("read %d: flags+unknown=%d, totals=%d, sidecars=%v", reads, sum, tot.Evaluations, tot.Sidecars)
		}
		if finished && tot.Evaluations != 10*batches {
			t.Fatalf("after every batch: %d evaluations, want %d", tot.Evaluations, 10*batches)
		}
	}
}
