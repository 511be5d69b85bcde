package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/usage"
)

// readerFunc adapts a function to usage.Reader.
type readerFunc func(env string, days int) (map[string]usage.FlagUsage, error)

func (f readerFunc) FlagUsage(env string, days int) (map[string]usage.FlagUsage, error) {
	return f(env, days)
}

// recorder is a notify.Emitter keeping what it was given.
type recorder struct {
	mu     sync.Mutex
	events []notify.Event
}

func (r *recorder) Emit(_ context.Context, e notify.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) taken() []notify.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// openStore starts JetStream and a store whose commit clock is *clock.
func openStore(t *testing.T, clock *time.Time) *config.Store {
	t.Helper()
	srv := natsrun.StartTest(t)
	js, _ := jetstream.New(natsrun.ConnectTest(t, srv))
	st, err := config.OpenStore(context.Background(), js, config.StoreOptions{Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func commit(t *testing.T, st *config.Store, env, author string, changes ...config.Change) {
	t.Helper()
	head, err := st.Head(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	for i := range changes {
		changes[i].BaseVersion = head.FlagVersion(changes[i].Flag)
	}
	if _, err := st.Commit(context.Background(), &config.Changeset{Env: env, Author: author, Changes: changes}); err != nil {
		t.Fatal(err)
	}
}

func putFlag(flag, extra string) config.Change {
	return config.Change{Flag: flag, Op: config.OpPut, Definition: json.RawMessage(`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"` + extra + `}`)}
}

// A report over the real store: created and last-changed come from the
// changesets (read again only from the last version seen), usage from the
// reader, and a missing or failing reader is "usage unknown".
func TestServiceReport(t *testing.T) {
	ctx := context.Background()
	clock := ago(100)
	st := openStore(t, &clock)
	if err := st.CreateEnv(ctx, config.EnvSettings{Name: "prod", Lifecycle: &config.LifecyclePolicy{StaleDays: 30}}); err != nil {
		t.Fatal(err)
	}
	commit(t, st, "prod", "ana", putFlag("a", `,"owner":"web"`), putFlag("b", ""))
	clock = ago(10)
	commit(t, st, "prod", "bo", putFlag("b", `,"owner":"web"`))

	var usageErr error
	reader := readerFunc(func(env string, days int) (map[string]usage.FlagUsage, error) {
		if env != "prod" || days != config.DefaultSettledDays {
			t.Errorf("FlagUsage(%q, %d), want (prod, %d)", env, days, config.DefaultSettledDays)
		}
		return map[string]usage.FlagUsage{"b": {LastEvaluated: now.Add(-time.Hour), Last24h: 5, Last7d: 9}}, usageErr
	})
	cases := []struct {
		name      string
		reader    usage.Reader
		usageErr  error
		note      string
		findingsA []string
	}{
		{name: "usage known", reader: reader, findingsA: []string{KindUnused, KindStale}},
		{name: "no reader", note: "usage unknown: no usage reader configured; no flag is reported unused or settled", findingsA: []string{KindStale}},
		{name: "failing reader", reader: reader, usageErr: errors.New("aggregator not ready"), note: "usage unknown: aggregator not ready; no flag is reported unused or settled", findingsA: []string{KindStale}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			usageErr = tc.usageErr
			svc, err := New(Options{Store: st, Usage: tc.reader, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.Report(ctx, "prod")
			if err != nil {
				t.Fatal(err)
			}
			if r.UsageNote != tc.note || r.UsageKnown != (tc.note == "") {
				t.Errorf("usage note %q known %v, want %q", r.UsageNote, r.UsageKnown, tc.note)
			}
			a, b := r.Flags[0], r.Flags[1]
			if a.Created == nil || a.Created.Version != 1 || a.Created.Author != "ana" || !a.Created.Time.Equal(ago(100)) || *a.AgeDays != 100 {
				t.Errorf("a created %+v age %v, want version 1 by ana 100 days ago", a.Created, a.AgeDays)
			}
			if b.LastChanged == nil || b.LastChanged.Version != 2 || b.LastChanged.Author != "bo" || b.Created.Version != 1 {
				t.Errorf("b created %+v last changed %+v, want 1 and 2", b.Created, b.LastChanged)
			}
			var kinds []string
			for _, f := range a.Findings {
				kinds = append(kinds, f.Kind)
			}
			if !slices.Equal(kinds, tc.findingsA) {
				t.Errorf("a findings %v, want %v", kinds, tc.findingsA)
			}
			if tc.note == "" && (b.Evaluations24h == nil || *b.Evaluations24h != 5 || len(b.Findings) != 0) {
				t.Errorf("b: %+v, want 5 evaluations in 24 h and no findings", b)
			}
		})
	}
	// A later version is folded in from where the history stopped; a
	// flag deleted and put again is created anew.
	svc, _ := New(Options{Store: st, Now: func() time.Time { return now }})
	if _, err := svc.Report(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	clock = now
	commit(t, st, "prod", "cy", config.Change{Flag: "b", Op: config.OpDelete})
	commit(t, st, "prod", "cy", putFlag("b", ""))
	r, err := svc.Report(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	if b := r.Flags[1]; b.Created.Version != 4 || b.LastChanged.Version != 4 || b.Created.Author != "cy" || r.Flags[0].Created.Version != 1 {
		t.Errorf("b recreated: created %+v last %+v, want version 4 by cy", b.Created, b.LastChanged)
	}
}

// The periodic check emits each finding once per flag per day, with IDs
// that another replica (another Service) derives identically.
func TestCheckEmitsOncePerDay(t *testing.T) {
	ctx := context.Background()
	clock := ago(200)
	st := openStore(t, &clock)
	for _, env := range []string{"dev", "prod"} {
		if err := st.CreateEnv(ctx, config.EnvSettings{Name: env}); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, st, "prod", "ana", putFlag("old", `,"expires":"2026-01-01","owner":"web"`))
	at := now
	rec := &recorder{}
	svc, _ := New(Options{Store: st, Notify: rec, Now: func() time.Time { return at }})
	if err := svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	first := rec.taken()
	var titles []string
	for _, e := range first {
		if e.Type != notify.TypeLifecycle || e.Env != "prod" || e.Flag != "old" || !strings.HasPrefix(e.ID, "lifecycle-") {
			t.Errorf("event %+v", e)
		}
		titles = append(titles, e.Title+" ["+e.Severity+"] "+e.Text)
	}
	want := []string{
		"old: stale [info] not changed for 200 days (version 1, 2026-05-13)",
		"old: expired [warning] expired on 2026-01-01 (331 days ago)",
	}
	if !slices.Equal(titles, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(titles, "\n"), strings.Join(want, "\n"))
	}
	at = now.Add(time.Hour)
	if err := svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if again := rec.taken(); len(again) != 0 {
		t.Fatalf("the same day's findings emitted again: %+v", again)
	}
	other, _ := New(Options{Store: st, Notify: rec, Now: func() time.Time { return at }})
	if err := other.Check(ctx); err != nil {
		t.Fatal(err)
	}
	replica := rec.taken()
	if len(replica) != len(first) || replica[0].ID != first[0].ID || replica[1].ID != first[1].ID {
		t.Fatalf("another replica's IDs differ: %+v vs %+v", replica, first)
	}
	at = now.Add(day)
	if err := svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	next := rec.taken()
	if len(next) != 2 || next[0].ID == first[0].ID {
		t.Fatalf("next day: %+v, want the findings again with new IDs", next)
	}
}
