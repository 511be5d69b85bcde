package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/telemetry"
)

// StateBucket is the JetStream KV bucket holding the aggregates (key
// "state"): totals and an hourly series per experiment, with the telemetry
// stream sequence they include. After a restart the aggregator loads it
// and follows the stream from the next sequence, so no batch is lost or
// counted twice.
const StateBucket = "pennon-experiments"

// maxHours bounds each experiment's hourly series (two weeks).
const maxHours = 14 * 24

// Totals is one experiment's aggregates: variant → what its units did.
type Totals map[string]*VariantDelta

// Point is one hour of an experiment: cumulative totals at its end.
type Point struct {
	Hour   time.Time `json:"hour"`
	Totals Totals    `json:"totals"`
}

type expState struct {
	Totals   Totals  `json:"totals"`
	Series   []Point `json:"series,omitempty"` // oldest first, cumulative
	Overflow uint64  `json:"overflow,omitempty"`
	Updated  time.Time
}

type persisted struct {
	Through uint64                          `json:"through"` // telemetry stream sequence included
	Envs    map[string]map[string]*expState `json:"envs"`    // env → flag → state
	// Unattributed counts exposures without a targeting key or beyond a
	// sidecar's unit cap, per env.
	NoUnit   map[string]uint64 `json:"noUnit,omitempty"`
	Overflow map[string]uint64 `json:"overflow,omitempty"`
}

// AggregatorOptions configure the control plane's side.
type AggregatorOptions struct {
	Replicas int
	// SaveEvery is how often the aggregates are persisted; default 10s.
	// A crash loses nothing: the stream is replayed from the saved point.
	SaveEvery time.Duration
	Logger    *zap.Logger
	Now       func() time.Time // tests
}

// Aggregator sums every sidecar's experiment deltas.
type Aggregator struct {
	o   AggregatorOptions
	kv  jetstream.KeyValue
	ing *telemetry.Ingest

	mu    sync.Mutex
	st    persisted
	dirty bool
}

// OpenAggregator loads the saved aggregates; Run follows the stream.
func OpenAggregator(ctx context.Context, js jetstream.JetStream, ing *telemetry.Ingest, o AggregatorOptions) (*Aggregator, error) {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket, History: 1, Replicas: o.Replicas, Storage: jetstream.FileStorage,
		Description: "pennon experiment aggregates (totals and hourly series) with the telemetry sequence they include"})
	if err != nil {
		return nil, fmt.Errorf("experiment: %w", err)
	}
	a := &Aggregator{o: o, kv: kv, ing: ing, st: persisted{Envs: map[string]map[string]*expState{}, NoUnit: map[string]uint64{}, Overflow: map[string]uint64{}}}
	e, err := kv.Get(ctx, "state")
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("experiment: load aggregates: %w", err)
	default:
		if err := json.Unmarshal(e.Value(), &a.st); err != nil {
			return nil, fmt.Errorf("experiment: saved aggregates do not decode: %w", err)
		}
		if a.st.Envs == nil {
			a.st.Envs = map[string]map[string]*expState{}
		}
		if a.st.NoUnit == nil {
			a.st.NoUnit = map[string]uint64{}
		}
		if a.st.Overflow == nil {
			a.st.Overflow = map[string]uint64{}
		}
	}
	return a, nil
}

// Run follows the experiments telemetry from where the saved aggregates
// end, saving them every SaveEvery and once more when ctx ends.
func (a *Aggregator) Run(ctx context.Context) error {
	a.mu.Lock()
	from := a.st.Through + 1
	a.mu.Unlock()
	f, err := a.ing.Follow(ctx, telemetry.KindExperiments, from, a.apply)
	if err != nil {
		return err
	}
	defer f.Stop()
	t := time.NewTicker(a.o.SaveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			return a.save(sctx)
		case <-t.C:
			if err := a.save(ctx); err != nil {
				a.o.Logger.Warn("experiment aggregates not saved; retrying", zap.Error(err))
			}
		}
	}
}

// CaughtUp is for tests and start-up: it waits until every batch stored so
// far has been applied.
func (a *Aggregator) CaughtUp(ctx context.Context) error {
	// A second follower from the current point tells us where the stream
	// ends; polling our own sequence avoids coupling to Run's follower.
	s, err := a.ing.LastSeq(ctx, telemetry.KindExperiments)
	if err != nil {
		return err
	}
	for {
		a.mu.Lock()
		through := a.st.Through
		a.mu.Unlock()
		if through >= s {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (a *Aggregator) apply(s telemetry.Stored) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.Seq <= a.st.Through {
		return // already included in the saved aggregates
	}
	if gap := a.st.Through; gap > 0 && s.Seq > gap+1 {
		a.o.Logger.Warn("experiment batches expired before they were aggregated (the control plane was down longer than the telemetry retention)",
			zap.Uint64("from", gap+1), zap.Uint64("to", s.Seq-1))
	}
	a.st.Through = s.Seq
	a.dirty = true
	var d Delta
	if err := json.Unmarshal(s.Batch.Data, &d); err != nil {
		a.o.Logger.Warn("skipping malformed experiment batch", zap.String("sidecar", s.Batch.Sidecar), zap.Uint64("seq", s.Batch.Seq), zap.Error(err))
		return
	}
	env := s.Batch.Env
	a.st.NoUnit[env] += d.NoUnit
	a.st.Overflow[env] += d.Overflow
	flags := a.st.Envs[env]
	if flags == nil {
		flags = map[string]*expState{}
		a.st.Envs[env] = flags
	}
	hour := s.Received.UTC().Truncate(time.Hour)
	for flag, variants := range d.Flags {
		if len(flag) > 256 || len(variants) > 64 {
			continue // not something a real sidecar sends
		}
		st := flags[flag]
		if st == nil {
			st = &expState{Totals: Totals{}}
			flags[flag] = st
		}
		for v, vd := range variants {
			if vd == nil || len(vd.Metrics) > 64 {
				continue
			}
			if st.Totals[v] == nil {
				st.Totals[v] = &VariantDelta{}
			}
			st.Totals[v].add(vd)
		}
		st.Updated = s.Received
		st.record(hour)
	}
}

// record sets the series' point for hour to the current totals.
func (st *expState) record(hour time.Time) {
	snap := st.Totals.clone()
	if n := len(st.Series); n > 0 && st.Series[n-1].Hour.Equal(hour) {
		st.Series[n-1].Totals = snap
		return
	}
	st.Series = append(st.Series, Point{Hour: hour, Totals: snap})
	if len(st.Series) > maxHours {
		st.Series = st.Series[len(st.Series)-maxHours:]
	}
}

func (t Totals) clone() Totals {
	out := make(Totals, len(t))
	for v, d := range t {
		c := &VariantDelta{}
		c.add(d)
		out[v] = c
	}
	return out
}

func (a *Aggregator) save(ctx context.Context) error {
	a.mu.Lock()
	if !a.dirty {
		a.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(a.st)
	a.dirty = false
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := a.kv.Put(ctx, "state", data); err != nil {
		a.mu.Lock()
		a.dirty = true
		a.mu.Unlock()
		return err
	}
	return nil
}

// Snapshot is what the control plane knows of one experiment.
type Snapshot struct {
	Totals   Totals
	Series   []Point
	Updated  time.Time
	NoUnit   uint64 // env-wide exposures without a targeting key
	Overflow uint64 // env-wide exposures beyond sidecars' unit caps
}

// Get returns a copy of flag's aggregates in env (ok false: no data).
func (a *Aggregator) Get(env, flag string) (Snapshot, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st.Envs[env][flag]
	if st == nil {
		return Snapshot{}, false
	}
	out := Snapshot{Totals: st.Totals.clone(), Updated: st.Updated, NoUnit: a.st.NoUnit[env], Overflow: a.st.Overflow[env]}
	for _, p := range st.Series {
		out.Series = append(out.Series, Point{Hour: p.Hour, Totals: p.Totals.clone()})
	}
	return out, true
}

// Flags lists the experiments with data in env.
func (a *Aggregator) Flags(env string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.st.Envs[env]))
	for f := range a.st.Envs[env] {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}
