package experiment

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/telemetry"
)

// StateBucket is the JetStream KV bucket holding the aggregates: one key
// per experiment ("x.<hash of env and flag>": totals and an hourly series),
// one per environment ("e.<env>": exposures not attributed), each with the
// telemetry stream sequence it includes, and "cursor", the sequence every
// key includes. After a restart the aggregator loads them and replays the
// stream from the cursor, applying a batch to a key only past that key's
// own sequence: nothing is lost or counted twice, even when it stopped
// between writing the keys and the cursor. One key per experiment keeps
// each value far below JetStream's message size limit.
const StateBucket = "pennon-experiments"

// maxHours bounds each experiment's hourly series (two weeks, about 200
// bytes per variant and metric per hour: well within one KV value).
const maxHours = 14 * 24

// Totals is one experiment's aggregates: variant → what its units did.
type Totals map[string]*VariantDelta

// Point is one hour of an experiment: cumulative totals at its end.
type Point struct {
	Hour   time.Time `json:"hour"`
	Totals Totals    `json:"totals"`
}

type expState struct {
	Env     string    `json:"env"`
	Flag    string    `json:"flag"`
	Through uint64    `json:"through"` // last stream sequence applied to this experiment
	Totals  Totals    `json:"totals"`
	Series  []Point   `json:"series,omitempty"` // oldest first, cumulative
	Updated time.Time `json:"updated"`
	dirty   bool
}

// envState counts, per environment, exposures without a targeting key or
// beyond a sidecar's unit cap.
type envState struct {
	Through  uint64 `json:"through"`
	NoUnit   uint64 `json:"noUnit,omitempty"`
	Overflow uint64 `json:"overflow,omitempty"`
	dirty    bool
}

type persisted struct {
	Through uint64                          // cursor: every batch up to here is in every key
	Envs    map[string]map[string]*expState // env → flag → state
	EnvAgg  map[string]*envState
}

func expKey(env, flag string) string {
	h := sha256.Sum256([]byte(env + "\x00" + flag))
	return "x." + hex.EncodeToString(h[:16])
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

	mu        sync.Mutex
	st        persisted
	dirty     bool
	warnedGap bool
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
	a := &Aggregator{o: o, kv: kv, ing: ing, st: persisted{Envs: map[string]map[string]*expState{}, EnvAgg: map[string]*envState{}}}
	if err := a.load(ctx); err != nil {
		return nil, fmt.Errorf("experiment: load aggregates: %w", err)
	}
	return a, nil
}

// load reads every saved key.
func (a *Aggregator) load(ctx context.Context) error {
	lister, err := a.kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		e, err := a.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		switch {
		case key == "cursor":
			var c struct {
				Through uint64 `json:"through"`
			}
			if err := json.Unmarshal(e.Value(), &c); err != nil {
				return fmt.Errorf("cursor does not decode: %w", err)
			}
			a.st.Through = c.Through
		case strings.HasPrefix(key, "e."):
			var es envState
			if err := json.Unmarshal(e.Value(), &es); err != nil {
				return fmt.Errorf("%s does not decode: %w", key, err)
			}
			a.st.EnvAgg[strings.TrimPrefix(key, "e.")] = &es
		case strings.HasPrefix(key, "x."):
			var st expState
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return fmt.Errorf("%s does not decode: %w", key, err)
			}
			if a.st.Envs[st.Env] == nil {
				a.st.Envs[st.Env] = map[string]*expState{}
			}
			a.st.Envs[st.Env][st.Flag] = &st
		}
	}
	return nil
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
		return // already included in every saved key
	}
	if gap := a.st.Through; gap > 0 && s.Seq > gap+1 && !a.warnedGap {
		a.warnedGap = true
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
	es := a.st.EnvAgg[env]
	if es == nil {
		es = &envState{}
		a.st.EnvAgg[env] = es
	}
	if s.Seq > es.Through { // not yet in its saved key
		es.NoUnit += d.NoUnit
		es.Overflow += d.Overflow
		es.Through, es.dirty = s.Seq, true
	}
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
			st = &expState{Env: env, Flag: flag, Totals: Totals{}}
			flags[flag] = st
		}
		if s.Seq <= st.Through {
			continue // its saved key already includes this batch
		}
		st.Through, st.dirty = s.Seq, true
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

// save writes every changed key, then the cursor. A crash between the two
// is harmless: each key says what it includes.
func (a *Aggregator) save(ctx context.Context) error {
	type put struct {
		key  string
		data []byte
		done func()
	}
	a.mu.Lock()
	if !a.dirty {
		a.mu.Unlock()
		return nil
	}
	var puts []put
	for _, flags := range a.st.Envs {
		for _, st := range flags {
			if !st.dirty {
				continue
			}
			data, err := json.Marshal(st)
			if err != nil {
				a.mu.Unlock()
				return err
			}
			st.dirty = false
			puts = append(puts, put{expKey(st.Env, st.Flag), data, func() { st.dirty = true }})
		}
	}
	for env, es := range a.st.EnvAgg {
		if !es.dirty {
			continue
		}
		data, _ := json.Marshal(es)
		es.dirty = false
		puts = append(puts, put{"e." + env, data, func() { es.dirty = true }})
	}
	cursor, _ := json.Marshal(map[string]uint64{"through": a.st.Through})
	a.dirty = false
	a.mu.Unlock()
	for i, p := range puts {
		if _, err := a.kv.Put(ctx, p.key, p.data); err != nil {
			a.mu.Lock()
			for _, q := range puts[i:] {
				q.done()
			}
			a.dirty = true
			a.mu.Unlock()
			return err
		}
	}
	if _, err := a.kv.Put(ctx, "cursor", cursor); err != nil {
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
	out := Snapshot{Totals: st.Totals.clone(), Updated: st.Updated}
	if es := a.st.EnvAgg[env]; es != nil {
		out.NoUnit, out.Overflow = es.NoUnit, es.Overflow
	}
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
