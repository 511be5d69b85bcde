package experiment

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/telemetry"
)

// A control plane that stopped after writing an experiment's key but
// before the cursor replays those batches on start and must not count
// them again; each key is its own value, so many experiments fit.
func TestAggregatorCrashBetweenKeysAndCursor(t *testing.T) {
	s := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, s)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	ing, err := telemetry.OpenIngest(ctx, js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	accept := func(seq uint64, flag string, exposed uint64) {
		t.Helper()
		data, _ := json.Marshal(Delta{Flags: map[string]map[string]*VariantDelta{flag: {"on": {Exposed: exposed}}}, NoUnit: 1})
		now := time.Now().UTC()
		b := telemetry.Batch{Kind: telemetry.KindExperiments, Env: "dev", Sidecar: "pod-1", Boot: "0011223344556677", Seq: seq, From: now, To: now, Data: data}
		if err := ing.Accept(ctx, b, "http"); err != nil {
			t.Fatal(err)
		}
	}
	run := func() (*Aggregator, context.CancelFunc, chan error) {
		a, err := OpenAggregator(ctx, js, ing, AggregatorOptions{SaveEvery: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(rctx) }()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		if err := a.CaughtUp(wctx); err != nil {
			t.Fatal(err)
		}
		return a, cancel, done
	}
	// 200 experiments: one key each (a single value would pass 1 MiB
	// with their hourly series).
	for i := range 200 {
		accept(uint64(i+1), "exp-"+string(rune('a'+i%26))+string(rune('a'+i/26)), 10)
	}
	_, cancel, done := run()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	accept(201, "exp-aa", 5)
	a, cancel, done := run()
	// Write the experiment's key and the env key, not the cursor: a crash
	// in the middle of save.
	a.mu.Lock()
	st := a.st.Envs["dev"]["exp-aa"]
	es := a.st.EnvAgg["dev"]
	stData, _ := json.Marshal(st)
	esData, _ := json.Marshal(es)
	a.mu.Unlock()
	if _, err := a.kv.Put(ctx, expKey("dev", "exp-aa"), stData); err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Put(ctx, "e.dev", esData); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.dirty = false // the crash: nothing else is saved
	a.mu.Unlock()
	cancel()
	<-done

	a2, cancel2, done2 := run()
	defer func() { cancel2(); <-done2 }()
	snap, ok := a2.Get("dev", "exp-aa")
	if !ok || snap.Totals["on"].Exposed != 15 {
		t.Fatalf("exp-aa exposed %+v, want 15 (10 + 5, the replayed batch counted once)", snap.Totals["on"])
	}
	if snap.NoUnit != 201 {
		t.Fatalf("unattributed %d, want 201", snap.NoUnit)
	}
	if n := len(a2.Flags("dev")); n != 200 {
		t.Fatalf("%d experiments after restart, want 200", n)
	}
}
