package usage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage/delta"
)

// Granularity of a rollup.
type Granularity int

// The rollups, finest first.
const (
	Minute Granularity = iota
	Hour
	Day
)

var grans = [...]struct {
	name      string
	step      time.Duration
	retention time.Duration
	bucket    string // JetStream KV bucket
}{
	Minute: {"minute", time.Minute, 48 * time.Hour, "PENNON_USAGE_MINUTE"},
	Hour:   {"hour", time.Hour, 35 * 24 * time.Hour, "PENNON_USAGE_HOUR"},
	Day:    {"day", 24 * time.Hour, 400 * 24 * time.Hour, "PENNON_USAGE_DAY"},
}

func (g Granularity) String() string { return grans[g].name }

// Step is the length of one bucket.
func (g Granularity) Step() time.Duration { return grans[g].step }

// Retention is how long buckets of g are kept.
func (g Granularity) Retention() time.Duration { return grans[g].retention }

// ParseGranularity reads "minute", "hour" or "day".
func ParseGranularity(s string) (Granularity, error) {
	for g := range grans {
		if grans[g].name == s {
			return Granularity(g), nil
		}
	}
	return 0, fmt.Errorf("granularity: %q is not one of minute, hour, day", s)
}

// stateBucket holds the aggregator's cursor: the telemetry stream sequence
// every rollup is complete through.
const stateBucket = "PENNON_USAGE_STATE"

// Bounds on one bucket's content (docs/usage.md, "Memory"): past them new
// names are counted under "other" (flags: under the bucket's unknown count).
const (
	maxFlags    = 10000
	maxVariants = 64
	maxApps     = 128
	maxReasons  = 32
	maxSidecars = 10000
	otherName   = "other"
)

// counts is one flag's evaluations in one bucket. Minute buckets keep
// only N, Errors and Variants (what series and anomaly detection read).
type counts struct {
	N        uint64            `json:"n"`
	Errors   uint64            `json:"err,omitempty"`
	Variants map[string]uint64 `json:"v,omitempty"`
	Reasons  map[string]uint64 `json:"r,omitempty"`
	Codes    map[string]uint64 `json:"e,omitempty"`
	Apps     map[string]uint64 `json:"a,omitempty"`
	// Last is when the control plane last stored a batch counting this flag.
	Last time.Time `json:"last,omitzero"`
}

// bucket is one environment's evaluations in one rollup period, as
// persisted. Through is the last telemetry stream sequence applied to it:
// replaying a batch at or below it is a no-op, which is what makes a
// restart between writing buckets and writing the cursor harmless.
type bucket struct {
	Through  uint64             `json:"through"`
	Flags    map[string]*counts `json:"flags"`
	Unknown  uint64             `json:"unknown,omitempty"` // evaluations of keys the sidecars did not know
	Sidecars map[string]uint64  `json:"sidecars,omitempty"`
	dirty    bool
}

type bucketKey struct {
	env   string
	start int64 // unix seconds
}

func (k bucketKey) kvKey() string { return k.env + "." + strconv.FormatInt(k.start, 10) }

func parseKVKey(s string) (bucketKey, bool) {
	i := strings.LastIndexByte(s, '.')
	if i <= 0 {
		return bucketKey{}, false
	}
	n, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil {
		return bucketKey{}, false
	}
	return bucketKey{env: s[:i], start: n}, true
}

// Options configure an Aggregator.
type Options struct {
	JetStream jetstream.JetStream
	Ingest    *telemetry.Ingest
	Replicas  int
	// Changes explains distribution shifts (config.Store implements it);
	// nil turns anomaly detection off.
	Changes ChangeSource
	// Emitter receives anomaly events; default notify.Discard.
	Emitter notify.Emitter
	Anomaly AnomalyOptions
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	// FlushEvery is how often changed rollups are written; default 5s.
	FlushEvery time.Duration
	// MinuteMemory is how much of the minute rollup is kept in memory
	// (older minutes are read from JetStream when asked for); default 3h.
	MinuteMemory time.Duration
	// MaxSkew is how far a batch's end time (the sidecar's clock) may lie
	// before the time the control plane stored it and still count as when
	// the evaluations happened; beyond it, or ahead of the control plane's
	// clock, the storing time is used. Default 47h (within the minute
	// rollup's retention).
	MaxSkew time.Duration
	// Now is the clock for reads, retention and anomaly windows; default
	// time.Now.
	Now func() time.Time
}

// Aggregator follows the usage telemetry stream and keeps minute, hour and
// day rollups per environment in memory and in JetStream. It implements
// Reader.
type Aggregator struct {
	o   Options
	log *zap.Logger
	kv  [len(grans)]jetstream.KeyValue
	st  jetstream.KeyValue

	mu          sync.RWMutex
	b           [len(grans)]map[bucketKey]*bucket
	applied     uint64 // last stream sequence applied
	flushed     uint64 // cursor as last written
	minuteFloor int64  // minute buckets before this start are not all in memory

	// flushMu serializes Flush: two overlapping flushes could land an
	// older copy of a bucket after a newer one.
	flushMu sync.Mutex

	follower *telemetry.Follower
	stop     chan struct{}
	wg       sync.WaitGroup
	closed   bool

	anom *anomalies
}

// Open loads the persisted rollups, then replays the usage stream from the
// cursor and keeps following it.
func Open(ctx context.Context, o Options) (*Aggregator, error) {
	if o.JetStream == nil || o.Ingest == nil {
		return nil, errors.New("usage: Options.JetStream and Options.Ingest are required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Emitter == nil {
		o.Emitter = notify.Discard
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = 5 * time.Second
	}
	if o.MinuteMemory <= 0 {
		o.MinuteMemory = 3 * time.Hour
	}
	if o.MaxSkew <= 0 {
		o.MaxSkew = 47 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Aggregator{o: o, log: o.Logger, stop: make(chan struct{})}
	for g := range grans {
		kv, err := o.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: grans[g].bucket,
			Description: "pennon usage rollups per " + grans[g].name, History: 1, TTL: grans[g].retention,
			Replicas: max(o.Replicas, 1), Storage: jetstream.FileStorage})
		if err != nil {
			return nil, fmt.Errorf("usage: %s rollups: %w", grans[g].name, err)
		}
		a.kv[g] = kv
		a.b[g] = map[bucketKey]*bucket{}
	}
	st, err := o.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: stateBucket,
		Description: "pennon usage aggregator cursor", History: 1, Replicas: max(o.Replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("usage: state: %w", err)
	}
	a.st = st
	if a.anom, err = newAnomalies(a, o); err != nil { // may widen MinuteMemory to the window
		return nil, err
	}
	if err := a.load(ctx); err != nil {
		return nil, err
	}
	from := a.applied + 1
	if st, err := o.JetStream.Stream(ctx, telemetry.StreamName(telemetry.KindUsage)); err == nil {
		if info, err := st.Info(ctx); err == nil && a.applied > 0 && info.State.FirstSeq > from {
			// Down longer than the stream keeps batches: those are gone.
			a.log.Warn("usage batches aged out of the telemetry stream before they were aggregated; their counts are lost",
				zap.Uint64("applied_through", a.applied), zap.Uint64("oldest_kept", info.State.FirstSeq))
		}
	}
	f, err := o.Ingest.Follow(ctx, telemetry.KindUsage, from, a.apply)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	a.follower = f
	a.wg.Add(1)
	go a.run()
	a.log.Info("usage aggregator started", zap.Uint64("from_seq", from))
	return a, nil
}

// load reads the cursor and every rollup bucket still within its
// retention (minutes: within MinuteMemory).
func (a *Aggregator) load(ctx context.Context) error {
	e, err := a.st.Get(ctx, "cursor")
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("usage: read cursor: %w", err)
	default:
		n, perr := strconv.ParseUint(string(e.Value()), 10, 64)
		if perr != nil {
			return fmt.Errorf("usage: cursor %q is not a sequence: %v", e.Value(), perr)
		}
		a.applied, a.flushed = n, n
	}
	now := a.o.Now()
	a.minuteFloor = now.Add(-a.o.MinuteMemory).Truncate(time.Minute).Unix()
	for g := range grans {
		keys, err := a.kv[g].ListKeys(ctx)
		if err != nil {
			return fmt.Errorf("usage: list %s rollups: %w", grans[g].name, err)
		}
		floor := now.Add(-grans[g].retention).Unix()
		if Granularity(g) == Minute {
			floor = a.minuteFloor
		}
		for k := range keys.Keys() {
			bk, ok := parseKVKey(k)
			if !ok || bk.start < floor {
				continue
			}
			b, err := a.read(ctx, Granularity(g), bk)
			if err != nil {
				return err
			}
			if b != nil {
				a.b[g][bk] = b
			}
		}
	}
	return nil
}

// read fetches one persisted bucket (nil when there is none).
func (a *Aggregator) read(ctx context.Context, g Granularity, k bucketKey) (*bucket, error) {
	e, err := a.kv[g].Get(ctx, k.kvKey())
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("usage: read %s rollup %s: %w", g, k.kvKey(), err)
	}
	var b bucket
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		return nil, fmt.Errorf("usage: %s rollup %s is corrupt: %v", g, k.kvKey(), err)
	}
	if b.Flags == nil {
		b.Flags = map[string]*counts{}
	}
	return &b, nil
}

// bucketTime is when a batch's evaluations count: the sidecar's end time,
// unless it is ahead of the control plane's clock or more than MaxSkew
// behind it. It depends only on the stored batch, so a replay puts every
// batch where it went the first time.
func (a *Aggregator) bucketTime(st telemetry.Stored) time.Time {
	t := st.Batch.To
	if t.After(st.Received) || t.Before(st.Received.Add(-a.o.MaxSkew)) {
		return st.Received
	}
	return t
}

// apply adds one stored batch to every rollup that has not seen it yet.
func (a *Aggregator) apply(st telemetry.Stored) {
	p, err := delta.Decode(st.Batch.Data)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = max(a.applied, st.Seq)
	if err != nil {
		a.log.Warn("usage batch skipped", zap.String("env", st.Batch.Env), zap.String("sidecar", st.Batch.Sidecar), zap.Uint64("seq", st.Seq), zap.Error(err))
		return
	}
	t := a.bucketTime(st)
	for g := range grans {
		k := bucketKey{env: st.Batch.Env, start: t.Truncate(grans[g].step).Unix()}
		b := a.bucketLocked(Granularity(g), k)
		if b == nil || st.Seq <= b.Through {
			continue
		}
		b.add(p, Granularity(g), st.Batch.Sidecar, st.Received)
		b.Through = st.Seq
		b.dirty = true
	}
}

// bucketLocked returns the bucket for k, reading it from JetStream when it
// may exist there without being in memory (minutes older than what is
// kept in memory). nil: it could not be read (logged once per failure);
// the batch then counts in the hour and day rollups only.
func (a *Aggregator) bucketLocked(g Granularity, k bucketKey) *bucket {
	if b, ok := a.b[g][k]; ok {
		return b
	}
	var b *bucket
	if g == Minute && k.start < a.minuteFloor {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		b, err = a.read(ctx, g, k)
		cancel()
		if err != nil {
			a.log.Warn("usage rollup not readable; batch counted in the others only", zap.Error(err))
			return nil
		}
	}
	if b == nil {
		b = &bucket{Flags: map[string]*counts{}}
	}
	a.b[g][k] = b
	return b
}

func addCapped(m *map[string]uint64, k string, n uint64, limit int) {
	if *m == nil {
		*m = map[string]uint64{}
	}
	if _, ok := (*m)[k]; !ok && len(*m) >= limit {
		k = otherName
	}
	(*m)[k] += n
}

// add applies p to b.
func (b *bucket) add(p *delta.Payload, g Granularity, sidecar string, received time.Time) {
	var total uint64
	for _, c := range p.Counts {
		total += c.N
		if c.Flag == "" {
			b.Unknown += c.N
			continue
		}
		fc := b.flag(c.Flag)
		if fc == nil {
			b.Unknown += c.N
			continue
		}
		fc.N += c.N
		if c.Code != "" {
			fc.Errors += c.N
		}
		if c.Variant != "" {
			addCapped(&fc.Variants, c.Variant, c.N, maxVariants)
		}
		if received.After(fc.Last) {
			fc.Last = received
		}
		if g == Minute {
			continue
		}
		addCapped(&fc.Reasons, c.Reason, c.N, maxReasons)
		if c.Code != "" {
			addCapped(&fc.Codes, c.Code, c.N, maxReasons)
		}
	}
	if g != Minute {
		for _, ac := range p.Apps {
			if fc := b.Flags[ac.Flag]; fc != nil && ac.Flag != "" {
				addCapped(&fc.Apps, ac.App, ac.N, maxApps)
			}
		}
	}
	if total > 0 {
		addCapped(&b.Sidecars, sidecar, total, maxSidecars)
	}
}

// flag returns the counts of key, nil past maxFlags.
func (b *bucket) flag(key string) *counts {
	if fc, ok := b.Flags[key]; ok {
		return fc
	}
	if len(b.Flags) >= maxFlags {
		return nil
	}
	fc := &counts{}
	b.Flags[key] = fc
	return fc
}

// run flushes every FlushEvery and checks for anomalies every
// Anomaly.Every, until Close.
func (a *Aggregator) run() {
	defer a.wg.Done()
	flush := time.NewTicker(a.o.FlushEvery)
	defer flush.Stop()
	check := time.NewTicker(a.anom.o.Every)
	defer check.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-flush.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := a.Flush(ctx); err != nil {
				a.log.Warn("usage rollups not written; retried next interval", zap.Error(err))
			}
			cancel()
		case <-check.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			a.anom.check(ctx)
			cancel()
		}
	}
}

// Flush writes every changed bucket, then the cursor, and forgets buckets
// past their retention (minutes: past MinuteMemory) that are written.
func (a *Aggregator) Flush(ctx context.Context) error {
	type write struct {
		g    Granularity
		k    bucketKey
		data []byte
	}
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	var writes []write
	a.mu.Lock()
	cursor := a.applied
	for g := range grans {
		for k, b := range a.b[g] {
			if !b.dirty {
				continue
			}
			data, err := json.Marshal(b)
			if err != nil {
				a.mu.Unlock()
				return fmt.Errorf("usage: encode %s rollup: %w", grans[g].name, err)
			}
			writes = append(writes, write{Granularity(g), k, data})
			b.dirty = false
		}
	}
	a.mu.Unlock()
	var failed error
	for i, w := range writes {
		if _, err := a.kv[w.g].Put(ctx, w.k.kvKey(), w.data); err != nil {
			failed = fmt.Errorf("usage: write %s rollup %s: %w", w.g, w.k.kvKey(), err)
			a.mu.Lock()
			for _, rest := range writes[i:] {
				if b := a.b[rest.g][rest.k]; b != nil {
					b.dirty = true
				}
			}
			a.mu.Unlock()
			break
		}
	}
	if failed == nil && cursor != a.flushedCursor() {
		if _, err := a.st.Put(ctx, "cursor", []byte(strconv.FormatUint(cursor, 10))); err != nil {
			failed = fmt.Errorf("usage: write cursor: %w", err)
		} else {
			a.mu.Lock()
			a.flushed = cursor
			a.mu.Unlock()
		}
	}
	a.evict()
	return failed
}

func (a *Aggregator) flushedCursor() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.flushed
}

// evict drops written buckets past their retention, and minute buckets
// older than MinuteMemory (they stay in JetStream for minute series).
func (a *Aggregator) evict() {
	now := a.o.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for g := range grans {
		floor := now.Add(-grans[g].retention).Unix()
		if Granularity(g) == Minute {
			floor = now.Add(-a.o.MinuteMemory).Truncate(time.Minute).Unix()
			a.minuteFloor = max(a.minuteFloor, floor)
		}
		for k, b := range a.b[g] {
			if k.start < floor && !b.dirty {
				delete(a.b[g], k)
			}
		}
	}
}

// Applied is the last telemetry stream sequence applied.
func (a *Aggregator) Applied() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.applied
}

// CaughtUp closes once the batches stored before Open are applied.
func (a *Aggregator) CaughtUp() <-chan struct{} { return a.follower.CaughtUp() }

// Close stops following and writes what is not written yet. A nil
// aggregator closes as a no-op, so callers need not check.
func (a *Aggregator) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	a.follower.Stop()
	close(a.stop)
	a.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.Flush(ctx)
}
