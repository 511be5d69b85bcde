// Package ledger is the control plane's side of incident records: it
// follows the incidents telemetry stream (what sidecars' Recorders ship),
// keeps the latest state of every record, records the control plane's own
// degradations (NATS disconnected, store unavailable), persists records in
// a JetStream KV bucket so a restart keeps them, announces openings and
// closings as notify events, and lists them newest first.
package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/telemetry"
)

// Bucket is the JetStream KV bucket holding incident records (one key per
// record, the latest state) and the stream position applied through.
const Bucket = "PENNON_INCIDENTS"

// Defaults of Options.
const (
	DefaultMaxRecords = 10000
	DefaultMaxAge     = 30 * 24 * time.Hour
	DefaultCheckEvery = 2 * time.Second
	// eventWindow: records applied while replaying the stream after a
	// start raise events only if their batch is at most this old, so a
	// restart does not announce every past incident again.
	eventWindow = 10 * time.Minute
	cursorKey   = "cursor"
)

// Options configure a Ledger.
type Options struct {
	// Ingest is followed for sidecars' records; nil: only the control
	// plane's own records are kept.
	Ingest *telemetry.Ingest
	// JetStream holds the KV bucket. Required.
	JetStream jetstream.JetStream
	Replicas  int
	// MaxRecords bounds the records kept in memory (default 10000); beyond
	// it the oldest closed ones are dropped from memory (they stay in the
	// bucket until MaxAge).
	MaxRecords int
	// MaxAge is how long a record is kept after its last change (the KV
	// bucket's TTL); default 30 days.
	MaxAge time.Duration
	// Notify receives an event when a record opens and when it closes;
	// default notify.Discard.
	Notify notify.Emitter
	// Source names this control plane in its own records; default
	// "control-plane/<hostname>".
	Source string
	// CheckEvery is the period of the control plane's own health check
	// (Watch); default 2s.
	CheckEvery time.Duration
	Logger     *zap.Logger
	// Metrics receives pennon_incidents_open{env,kind} (the records open
	// now; env "" for the control plane's own), for alerts. Optional.
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// Ledger keeps incident records.
type Ledger struct {
	o   Options
	log *zap.Logger
	kv  jetstream.KeyValue
	own *incident.Recorder

	mu      sync.Mutex
	records map[string]*incident.Record
	boots   map[string]string // env + "\x00" + source -> latest boot seen
	dirty   map[string]bool   // IDs not yet persisted
	applied uint64            // stream sequence applied through
	follow  *telemetry.Follower
}

// Open creates (or opens) the bucket, loads the records kept there and
// starts following the incidents stream from where the bucket says it
// was applied through.
func Open(ctx context.Context, o Options) (*Ledger, error) {
	if o.JetStream == nil {
		return nil, errors.New("ledger: Options.JetStream is required")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = DefaultCheckEvery
	}
	if o.Notify == nil {
		o.Notify = notify.Discard
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Source == "" {
		h, _ := os.Hostname()
		o.Source = "control-plane/" + h
	}
	kv, err := o.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket,
		Description: "pennon incident records (latest state per record)", History: 1, TTL: o.MaxAge,
		Replicas: o.Replicas, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("ledger: bucket %s: %w", Bucket, err)
	}
	own, err := incident.NewRecorder(incident.RecorderOptions{Source: o.Source, Logger: o.Logger, Now: o.Now})
	if err != nil {
		return nil, err
	}
	l := &Ledger{o: o, log: o.Logger, kv: kv, own: own, records: map[string]*incident.Record{},
		boots: map[string]string{}, dirty: map[string]bool{}}
	if err := l.load(ctx); err != nil {
		return nil, err
	}
	if o.Metrics != nil {
		if err := o.Metrics.Register(openCollector{l}); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	// What an earlier process of this control plane left open, it cannot
	// close any more.
	l.supersede("", o.Source, own.Boot())
	if o.Ingest != nil {
		// A stream recreated since (its sequence restarted) is read from
		// its start: applying a batch twice changes nothing.
		if st, err := o.JetStream.Stream(ctx, telemetry.StreamName(telemetry.KindIncidents)); err == nil {
			if info, err := st.Info(ctx); err == nil && info.State.LastSeq < l.applied {
				l.log.Warn("incidents stream is behind the position the bucket recorded (recreated?): reading it from the start",
					zap.Uint64("applied", l.applied), zap.Uint64("streamLast", info.State.LastSeq))
				l.applied = 0
			}
		}
		f, err := o.Ingest.Follow(ctx, telemetry.KindIncidents, l.applied+1, l.onBatch)
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		l.follow = f
	}
	return l, nil
}

// load reads the bucket.
func (l *Ledger) load(ctx context.Context) error {
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("ledger: list %s: %w", Bucket, err)
	}
	for key := range lister.Keys() {
		e, err := l.kv.Get(ctx, key)
		if err != nil {
			continue // expired or deleted between the listing and now
		}
		if key == cursorKey {
			l.applied, _ = strconv.ParseUint(string(e.Value()), 10, 64)
			continue
		}
		var rec incident.Record
		if json.Unmarshal(e.Value(), &rec) != nil || rec.ID == "" {
			l.log.Warn("skipping unreadable incident record", zap.String("key", key))
			continue
		}
		l.records[rec.ID] = &rec
		if rec.Boot != "" {
			l.boots[rec.Env+"\x00"+rec.Source] = rec.Boot // roughly: corrected by the next batch
		}
	}
	return nil
}

// CaughtUp closes once the records stored in the stream when the ledger
// opened have been applied (at once without an Ingest).
func (l *Ledger) CaughtUp() <-chan struct{} {
	if l.follow == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return l.follow.CaughtUp()
}

// Close stops following the stream.
func (l *Ledger) Close() {
	if l.follow != nil {
		l.follow.Stop()
	}
}

// onBatch applies one stored batch of sidecar records.
func (l *Ledger) onBatch(s telemetry.Stored) {
	var p incident.Payload
	if err := json.Unmarshal(s.Batch.Data, &p); err != nil {
		l.log.Warn("skipping undecodable incidents batch", zap.Uint64("seq", s.Seq), zap.String("sidecar", s.Batch.Sidecar), zap.Error(err))
		l.setApplied(s.Seq)
		return
	}
	notifyOK := l.o.Now().Sub(s.Received) <= eventWindow
	l.mu.Lock()
	var events []notify.Event
	if p.Boot != "" {
		if evs := l.supersedeLocked(s.Batch.Env, s.Batch.Sidecar, p.Boot); notifyOK {
			events = evs
		}
	}
	for i := range p.Records {
		rec := p.Records[i]
		if err := checkRecord(&rec, s.Batch); err != nil {
			l.log.Warn("skipping incident record", zap.String("sidecar", s.Batch.Sidecar), zap.Uint64("seq", s.Seq), zap.Error(err))
			continue
		}
		rec.Seq = s.Seq
		if ev := l.putLocked(rec); notifyOK {
			events = append(events, ev...)
		}
	}
	l.mu.Unlock()
	l.emit(events)
	l.persist(s.Seq)
}

// checkRecord makes sure a sidecar's record speaks only for that sidecar:
// its identity comes from the batch envelope (which the control plane
// authenticated), not from the payload.
func checkRecord(rec *incident.Record, b telemetry.Batch) error {
	switch {
	case rec.ID == "" || len(rec.ID) > 512:
		return errors.New("id: missing or longer than 512 bytes")
	case !strings.HasPrefix(rec.ID, b.Sidecar+"/"):
		return fmt.Errorf("id: %q does not belong to sidecar %q", rec.ID, b.Sidecar)
	case rec.Kind == "" || len(rec.Kind) > 64:
		return errors.New("kind: missing or longer than 64 bytes")
	case rec.Status != incident.StatusOpen && rec.Status != incident.StatusRecovered && rec.Status != incident.StatusSuperseded:
		return fmt.Errorf("status: %q is not open, recovered or superseded", rec.Status)
	case len(rec.Fallbacks) > 64 || len(rec.Detail) > 64:
		return errors.New("fallbacks/detail: more than 64 entries")
	}
	rec.Env, rec.Source = b.Env, b.Sidecar
	return nil
}

// putLocked keeps rec if it is newer than what is kept, and returns the
// events its change raises.
func (l *Ledger) putLocked(rec incident.Record) []notify.Event {
	old := l.records[rec.ID]
	if !rec.Newer(old) {
		return nil
	}
	if old != nil && old.Status == incident.StatusSuperseded && !rec.Closed() {
		return nil // a late resend of what a previous boot left open
	}
	l.records[rec.ID] = &rec
	l.dirty[rec.ID] = true
	var evs []notify.Event
	if old == nil {
		evs = append(evs, event(&rec, "opened", l.o.Now()))
	}
	if rec.Closed() && (old == nil || !old.Closed()) {
		evs = append(evs, event(&rec, "closed", l.o.Now()))
	}
	l.evictLocked()
	return evs
}

// supersede marks the open records of source's earlier boots superseded.
func (l *Ledger) supersede(env, source, boot string) {
	l.mu.Lock()
	evs := l.supersedeLocked(env, source, boot)
	l.mu.Unlock()
	l.emit(evs)
}

// supersedeLocked returns the closing events of the records it closed.
func (l *Ledger) supersedeLocked(env, source, boot string) []notify.Event {
	k := env + "\x00" + source
	if l.boots[k] == boot {
		return nil
	}
	l.boots[k] = boot
	if len(l.boots) > 2*l.o.MaxRecords {
		l.pruneBootsLocked()
	}
	var evs []notify.Event
	for id, rec := range l.records {
		if rec.Env != env || rec.Source != source || rec.Boot == boot || rec.Closed() {
			continue
		}
		// It ended, at the latest, when its process last spoke of it.
		c := *rec
		end := c.Updated
		if end.Before(c.Start) {
			end = c.Start
		}
		c.Status, c.End, c.Recovered, c.Rev = incident.StatusSuperseded, &end, false, c.Rev+1
		l.records[id] = &c
		l.dirty[id] = true
		l.log.Info("incident superseded: its process restarted", zap.String("incident", id), zap.String("kind", c.Kind), zap.String("source", source))
		evs = append(evs, event(&c, "closed", l.o.Now()))
	}
	return evs
}

// evictLocked keeps at most MaxRecords in memory, dropping the oldest
// closed ones (a tenth at a time, so it runs rarely).
func (l *Ledger) evictLocked() {
	if len(l.records) <= l.o.MaxRecords {
		return
	}
	var closed []*incident.Record
	for _, r := range l.records {
		if r.Closed() {
			closed = append(closed, r)
		}
	}
	sort.Slice(closed, func(i, j int) bool { return closed[i].Updated.Before(closed[j].Updated) })
	n := min(len(closed), len(l.records)-l.o.MaxRecords*9/10)
	for _, r := range closed[:n] {
		delete(l.records, r.ID)
		delete(l.dirty, r.ID)
	}
	l.pruneBootsLocked()
	l.log.Info("oldest closed incidents dropped from memory", zap.Int("dropped", n), zap.Int("maxRecords", l.o.MaxRecords))
}

// pruneBootsLocked keeps the latest boot only of sources that still have
// records: pods come and go (sidecar IDs are host:pid), the map must not
// grow with them.
func (l *Ledger) pruneBootsLocked() {
	keep := map[string]bool{}
	for _, r := range l.records {
		keep[r.Env+"\x00"+r.Source] = true
	}
	for k := range l.boots {
		if !keep[k] {
			delete(l.boots, k)
		}
	}
}

func event(r *incident.Record, what string, now time.Time) notify.Event {
	sev := notify.SeverityWarning
	switch {
	case what == "closed" && r.Recovered:
		sev = notify.SeverityInfo
	case r.Kind == incident.KindSignatureRejected || r.Kind == incident.KindStoreUnavailable:
		sev = notify.SeverityCritical
	}
	where := r.Source
	return notify.Event{ID: "incident/" + r.ID + "/" + what, Type: notify.TypeIncident, Env: r.Env, Time: now.UTC(), Severity: sev,
		Title: where + ": " + r.Kind + " " + what, Text: r.Summary(now),
		Data: map[string]any{"incident": r.ID, "kind": r.Kind, "status": r.Status, "recovered": r.Recovered, "source": r.Source}}
}

func (l *Ledger) emit(evs []notify.Event) {
	for _, e := range evs {
		l.o.Notify.Emit(context.Background(), e)
	}
}

func (l *Ledger) setApplied(seq uint64) {
	l.mu.Lock()
	l.applied = max(l.applied, seq)
	l.mu.Unlock()
	l.persist(0)
}

// persist writes the changed records and, once all are written, the
// stream position applied through (seq; 0: unchanged). A record that
// cannot be written stays dirty and is retried by the next call.
func (l *Ledger) persist(seq uint64) {
	l.mu.Lock()
	if seq > 0 {
		l.applied = max(l.applied, seq)
	}
	type kv struct {
		id  string
		val []byte
	}
	var todo []kv
	for id := range l.dirty {
		if r := l.records[id]; r != nil {
			b, _ := json.Marshal(r)
			todo = append(todo, kv{id, b})
		}
	}
	applied := l.applied
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failed := 0
	for _, w := range todo {
		if _, err := l.kv.Put(ctx, key(w.id), w.val); err != nil {
			failed++
			continue
		}
		l.mu.Lock()
		if r := l.records[w.id]; r != nil {
			if b, _ := json.Marshal(r); string(b) == string(w.val) {
				delete(l.dirty, w.id) // unless it changed meanwhile
			}
		}
		l.mu.Unlock()
	}
	if failed > 0 {
		return
	}
	if applied > 0 {
		_, _ = l.kv.Put(ctx, cursorKey, []byte(strconv.FormatUint(applied, 10)))
	}
}

// key is the bucket key of a record: IDs hold any printable characters
// (sidecar IDs), keys only a few.
func key(id string) string {
	h := sha256.Sum256([]byte(id))
	return "r." + hex.EncodeToString(h[:16])
}

// Watch records the control plane's own degradations until ctx ends: every
// CheckEvery it checks its NATS connection and, while connected, that
// JetStream answers. Its records are kept like sidecars' (Env empty).
func (l *Ledger) Watch(ctx context.Context, nc *nats.Conn) {
	t := time.NewTicker(l.o.CheckEvery)
	defer t.Stop()
	for {
		l.check(ctx, nc)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs one health check and applies what the control plane's own
// recorder produced.
func (l *Ledger) check(ctx context.Context, nc *nats.Conn) {
	healthy := false
	switch {
	case !nc.IsConnected():
		l.own.Begin(incident.KindNATSDisconnected, "NATS connection "+strings.ToLower(nc.Status().String()))
	default:
		l.own.End(incident.KindNATSDisconnected)
		cctx, cancel := context.WithTimeout(ctx, l.o.CheckEvery)
		_, err := l.o.JetStream.AccountInfo(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			l.own.Begin(incident.KindStoreUnavailable, err.Error())
		} else if err == nil {
			l.own.End(incident.KindStoreUnavailable)
			healthy = true
		}
	}
	l.applyOwn(healthy)
}

// applyOwn takes the control plane's own records and keeps them; they
// (and anything an outage left unwritten) are written to the bucket only
// when the store answers, so an outage does not stall the check.
func (l *Ledger) applyOwn(write bool) {
	data, err := l.own.Take()
	if err == nil && data != nil {
		var p incident.Payload
		if json.Unmarshal(data, &p) == nil {
			l.mu.Lock()
			var evs []notify.Event
			for _, rec := range p.Records {
				evs = append(evs, l.putLocked(rec)...)
			}
			l.mu.Unlock()
			l.emit(evs)
		}
	}
	if write {
		l.persist(0)
	}
}

// Filter selects what List returns. Visible decides per environment ("":
// the control plane's own records); nil shows everything.
type Filter struct {
	Visible func(env string) bool
	// Status keeps only records in this status ("": all).
	Status string
	Limit  int // default 100
}

// List returns the records Filter selects, newest first (by start).
func (l *Ledger) List(f Filter) []incident.Record {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	l.mu.Lock()
	out := make([]incident.Record, 0, min(len(l.records), f.Limit))
	for _, r := range l.records {
		if (f.Visible == nil || f.Visible(r.Env)) && (f.Status == "" || f.Status == r.Status) {
			out = append(out, *r)
		}
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.After(out[j].Start)
		}
		return out[i].ID > out[j].ID
	})
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

var openDesc = prometheus.NewDesc("pennon_incidents_open",
	"Incident records open now, by environment (empty: the control plane's own) and kind.", []string{"env", "kind"}, nil)

// openCollector counts the open records at scrape time, so the series can
// never disagree with the list the API serves.
type openCollector struct{ l *Ledger }

func (c openCollector) Describe(ch chan<- *prometheus.Desc) { ch <- openDesc }

func (c openCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ env, kind string }
	n := map[key]int{}
	c.l.mu.Lock()
	for _, r := range c.l.records {
		if !r.Closed() {
			n[key{r.Env, r.Kind}]++
		}
	}
	c.l.mu.Unlock()
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(openDesc, prometheus.GaugeValue, float64(v), k.env, k.kind)
	}
}
