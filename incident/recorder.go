package incident

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Load is a sidecar's request load: requests in flight and answered since
// start (rates are computed from deltas between Takes).
type Load struct {
	InFlight int64
	Requests uint64
}

// SyncConditions are what a sidecar serves and how it is synced.
type SyncConditions struct {
	State    string
	Version  uint64
	Hash     string
	NATS     bool
	Breaker  string
	LastSync time.Time
}

// Defaults of RecorderOptions.
const (
	DefaultQuietFor   = 30 * time.Second
	DefaultResend     = time.Hour
	DefaultStartGrace = 10 * time.Second
	DefaultMaxClosed  = 64
	// maxDetail bounds Record.Detail.
	maxDetail = 16
)

// RecorderOptions configure a sidecar's Recorder.
type RecorderOptions struct {
	Env    string
	Source string // the sidecar's ID
	// PushExpected: the sidecar is configured with NATS, so polling is a
	// degradation; without NATS polling is the normal mode and only the
	// disk copy and the defaults open records.
	PushExpected bool
	// QuietFor: records of things that happen per answer or per input
	// (fail-mode answers, fallback targeting, cache bypass, rejections)
	// close, recovered, after this long without a new occurrence; default
	// 30s. They are checked at every Take.
	QuietFor time.Duration
	// StartGrace: a sidecar meant for push polls for a moment at every
	// start (before its first heartbeat); that is a degradation only when
	// it lasts longer than this. Default 10s.
	StartGrace time.Duration
	// Resend: an open record unchanged for this long is sent again so the
	// control plane's copy (and its stream) never ages out; default 1h.
	Resend time.Duration
	// MaxClosed bounds the closed records waiting for the next Take; the
	// oldest beyond it are dropped (and counted in the log). Default 64.
	// With at most one open record per kind, a Recorder never holds more
	// than MaxClosed + 7 records.
	MaxClosed int
	// Load is read from hooks (when a record opens, at every ladder
	// transition) and at every Take: it must be cheap and take no lock.
	// Errors (failed answers since start) and Sync are read only at Take,
	// never from a hook: sync hooks run under the sync component's lock
	// and pass their conditions. All three may be nil.
	Load   func() Load
	Errors func() uint64
	Sync   func() SyncConditions
	Logger *zap.Logger
	Now    func() time.Time
}

// Recorder turns a sidecar's degradations into incident records and hands
// them to the telemetry shipper (it is a telemetry.Source of kind
// "incidents"). It implements proxy.IncidentHook and
// flagsync.IncidentHook. The per-answer hooks (FailModeAnswer,
// FallbackAnswer, BypassedAnswer) are an atomic add and an atomic load:
// no lock, no allocation, no clock read.
type Recorder struct {
	o    RecorderOptions
	boot string
	log  *zap.Logger

	// Answers served by each fallback since the Recorder started
	// (monotonic); records keep the value at which they began.
	counters [nCounters]atomic.Uint64
	// Whether a record of the per-answer kinds is open: the hot path's
	// only check before its add.
	failOpenRec, targetOpenRec atomic.Bool

	mu        sync.Mutex
	seq       uint64
	open      map[string]*entry // by kind
	closed    []Record          // closed, not yet taken
	dropped   int
	sync      SyncConditions
	sample    loadSample
	bypassOff time.Time // when the cache bypass last ended (zero: bypassed or never)
	bypassOn  bool
	greeted   bool // the first payload (announcing Boot) was taken
	// startPoll is when a start began polling (push expected): a record
	// only if it lasts StartGrace (startWhy, startCond: as it began).
	startPoll time.Time
	startWhy  string
	startCond SyncConditions
}

type loadSample struct {
	at             time.Time
	req, err       uint64
	rps, errorRate float64
}

// Counters of answers served by a fallback.
const (
	cFailClosed = iota
	cFailOpen
	cCost
	cOverload
	cBypass
	nCounters
)

var counterNames = [nCounters]string{FallbackFailClosed, FallbackFailOpen, FallbackTargetingCost, FallbackTargetingOverload, FallbackCacheBypass}

// countersOf lists the fallbacks a kind's records count.
func countersOf(kind string) []int {
	switch kind {
	case KindPushLost, KindControlPlaneLost, KindBreakerOpen, KindFailMode:
		return []int{cFailClosed, cFailOpen}
	case KindTargetingFallback:
		return []int{cCost, cOverload}
	case KindCacheBypass:
		return []int{cBypass}
	}
	return nil
}

// entry is an open record and its bookkeeping.
type entry struct {
	rec   Record
	base  [nCounters]uint64 // counter values when the record opened
	index map[string]int    // fallback name -> position in rec.Fallbacks
	// The ladder's current rung and the request count when it began.
	rung     string
	rungReq  uint64
	rungDone map[string]uint64 // answers of rungs left earlier
	// lastAns is the sum of the counted answers at the last Take; quiet is
	// when it last changed (for the per-answer kinds' closing).
	lastAns uint64
	quiet   time.Time
	lastAt  time.Time // last rejection
	dirty   bool
	sentAt  time.Time
}

// NewRecorder builds a Recorder.
func NewRecorder(o RecorderOptions) (*Recorder, error) {
	if o.Source == "" {
		return nil, fmt.Errorf("incident: RecorderOptions.Source (the sidecar's ID) is required")
	}
	if o.QuietFor <= 0 {
		o.QuietFor = DefaultQuietFor
	}
	if o.Resend <= 0 {
		o.Resend = DefaultResend
	}
	if o.StartGrace <= 0 {
		o.StartGrace = DefaultStartGrace
	}
	if o.MaxClosed <= 0 {
		o.MaxClosed = DefaultMaxClosed
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("incident: boot id: %w", err)
	}
	r := &Recorder{o: o, boot: hex.EncodeToString(b[:]), log: o.Logger, open: map[string]*entry{}}
	r.sample.at = o.Now()
	if o.Load != nil {
		r.sample.req = o.Load().Requests
	}
	if o.Errors != nil {
		r.sample.err = o.Errors()
	}
	return r, nil
}

// Kind implements telemetry.Source.
func (r *Recorder) Kind() string { return "incidents" }

// Boot identifies this Recorder's process in record IDs.
func (r *Recorder) Boot() string { return r.boot }

// ---- hooks: sync ----

// SyncChanged is told every change of the sync state (flagsync), with the
// conditions at that moment. It runs under the sync component's lock.
func (r *Recorder) SyncChanged(from, to, why string, c SyncConditions) {
	if to == "starting" || r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sync = c
	now := r.o.Now()
	kind := KindControlPlaneLost
	if r.o.PushExpected {
		kind = KindPushLost
	}
	e := r.open[kind]
	healthy := to == "push" || (to == "polling" && !r.o.PushExpected)
	if healthy {
		r.startPoll = time.Time{}
		if e != nil {
			r.closeLocked(e, StatusRecovered, now)
		}
		return
	}
	if e == nil && from == "starting" && to == "polling" {
		// Every start polls until its first heartbeat: wait and see.
		r.startPoll, r.startWhy, r.startCond = now, why, c
		return
	}
	if e == nil {
		e = r.openStartLocked(kind, why, now)
	}
	r.enterRungLocked(e, to, now)
}

// openStartLocked opens the ladder record; when the sidecar has been
// polling since its start, the record begins then, with that rung first.
func (r *Recorder) openStartLocked(kind, why string, now time.Time) *entry {
	if r.startPoll.IsZero() {
		return r.openLocked(kind, why, now)
	}
	at, c := r.startPoll, r.sync
	r.sync = r.startCond
	e := r.openLocked(kind, "push not established since start: "+r.startWhy, at)
	r.sync = c
	r.startPoll = time.Time{}
	r.enterRungLocked(e, "polling", at)
	return e
}

// enterRungLocked moves the ladder record to rung.
func (r *Recorder) enterRungLocked(e *entry, rung string, now time.Time) {
	if e.rung == rung {
		return
	}
	req := r.requests()
	if e.rung != "" {
		e.rungDone[e.rung] += req - e.rungReq
	}
	e.rung, e.rungReq = rung, req
	r.fallbackLocked(e, rung, now)
	r.updateRungsLocked(e, req)
	e.dirty = true
}

func (r *Recorder) updateRungsLocked(e *entry, req uint64) {
	for name, n := range e.rungDone {
		if i, ok := e.index[name]; ok {
			e.rec.Fallbacks[i].Answers = n
		}
	}
	if e.rung != "" {
		if i, ok := e.index[e.rung]; ok {
			e.rec.Fallbacks[i].Answers = e.rungDone[e.rung] + (req - e.rungReq)
		}
	}
}

// BreakerChanged is told when the circuit breaker opens or closes, with
// the consecutive failures counted and the last error.
func (r *Recorder) BreakerChanged(open bool, failures int, err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	e := r.open[KindBreakerOpen]
	if open {
		if e == nil {
			why := "consecutive failures"
			if err != nil {
				why = err.Error()
			}
			e = r.openLocked(KindBreakerOpen, why, now)
		}
		e.rec.Count = uint64(failures)
		e.rec.AtStart.Breaker = "open"
		return
	}
	if e != nil {
		e.rec.Count = max(e.rec.Count, uint64(failures))
		r.closeLocked(e, StatusRecovered, now)
	}
}

// Rejected is told each input the sidecar refused before serving it
// (kind: changeset, snapshot, heartbeat, disk, catchup; why: the reason).
func (r *Recorder) Rejected(kind, why string, version uint64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	e := r.open[KindSignatureRejected]
	if e == nil {
		e = r.openLocked(KindSignatureRejected, kind+": "+why, now)
	}
	e.rec.Count++
	e.lastAt = now
	d := kind + ": " + why
	if version > 0 {
		d += " (v" + strconv.FormatUint(version, 10) + ")"
	}
	addDetail(&e.rec, d)
	e.dirty = true
}

// Begin opens a record of kind (why it began) unless one is open: the
// control plane's own degradations, which no hook reports.
func (r *Recorder) Begin(kind, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open[kind] == nil {
		r.openLocked(kind, why, r.o.Now())
	}
}

// End closes kind's open record, if any, as recovered.
func (r *Recorder) End(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.open[kind]; e != nil {
		r.closeLocked(e, StatusRecovered, r.o.Now())
	}
}

// ---- hooks: proxy ----

// FailModeAnswer counts one always-fresh answer served on its failMode.
func (r *Recorder) FailModeAnswer(closed bool) {
	if r == nil {
		return
	}
	c := cFailOpen
	if closed {
		c = cFailClosed
	}
	if !r.failOpenRec.Load() { // before the add: the record counts this answer
		r.openPerAnswer(KindFailMode, "freshness could not be established", &r.failOpenRec)
	}
	r.counters[c].Add(1)
}

// FallbackAnswer counts one answer served by fallbackTargeting.
func (r *Recorder) FallbackAnswer(overload bool) {
	if r == nil {
		return
	}
	c := cCost
	if overload {
		c = cOverload
	}
	if !r.targetOpenRec.Load() { // before the add: the record counts this answer
		why := "full rule over budget"
		if overload {
			why = "sidecar overloaded"
		}
		r.openPerAnswer(KindTargetingFallback, why, &r.targetOpenRec)
	}
	r.counters[c].Add(1)
}

// TargetingChanged is told when a flag moves to its fallback targeting
// (reason cost or overload) or back.
func (r *Recorder) TargetingChanged(flag, reason string, degraded bool) {
	if r == nil || !degraded {
		return
	}
	why := "full rule over budget"
	if reason == "overload" {
		why = "sidecar overloaded"
	}
	r.openPerAnswer(KindTargetingFallback, why, &r.targetOpenRec)
	r.mu.Lock()
	if e := r.open[KindTargetingFallback]; e != nil {
		addDetail(&e.rec, flag+" ("+reason+")")
		e.dirty = true
	}
	r.mu.Unlock()
}

// CacheBypass is told when the response cache is stepped aside (on, with
// why) and when it is back in use.
func (r *Recorder) CacheBypass(on bool, why string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	r.bypassOn = on
	if !on {
		r.bypassOff = now
		return
	}
	r.bypassOff = time.Time{}
	e := r.open[KindCacheBypass]
	if e == nil {
		e = r.openLocked(KindCacheBypass, why, now)
	}
	r.fallbackLocked(e, FallbackCacheBypass, now)
}

// BypassedAnswer counts one answer evaluated because the cache was
// stepped aside.
func (r *Recorder) BypassedAnswer() {
	if r != nil {
		r.counters[cBypass].Add(1)
	}
}

func (r *Recorder) openPerAnswer(kind, why string, flag *atomic.Bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open[kind] == nil {
		r.openLocked(kind, why, r.o.Now())
	}
	flag.Store(true)
}

// ---- records ----

func (r *Recorder) openLocked(kind, why string, now time.Time) *entry {
	r.seq++
	e := &entry{rec: Record{ID: r.o.Source + "/" + r.boot + "/" + strconv.FormatUint(r.seq, 10), Kind: kind, Env: r.o.Env,
		Source: r.o.Source, Boot: r.boot, Status: StatusOpen, Start: now.UTC(), Reason: why, Fallbacks: []Fallback{}},
		index: map[string]int{}, rungDone: map[string]uint64{}, quiet: now, dirty: true}
	for i := range e.base {
		e.base[i] = r.counters[i].Load()
	}
	e.rec.AtStart = r.conditionsLocked(now)
	r.open[kind] = e
	r.log.Warn("incident opened", zap.String("incident", e.rec.ID), zap.String("kind", kind), zap.String("reason", why),
		zap.String("state", e.rec.AtStart.State), zap.Uint64("version", e.rec.AtStart.Version))
	return e
}

func (r *Recorder) fallbackLocked(e *entry, name string, now time.Time) {
	if _, ok := e.index[name]; ok {
		return
	}
	e.index[name] = len(e.rec.Fallbacks)
	e.rec.Fallbacks = append(e.rec.Fallbacks, Fallback{Name: name, Since: now.UTC()})
	e.dirty = true
}

// countLocked brings e's counted fallbacks up to date and returns the sum
// of its counted answers.
func (r *Recorder) countLocked(e *entry, now time.Time) uint64 {
	var sum uint64
	for _, c := range countersOf(e.rec.Kind) {
		n := r.counters[c].Load() - e.base[c]
		sum += n
		if n == 0 {
			continue
		}
		name := counterNames[c]
		r.fallbackLocked(e, name, now)
		if f := &e.rec.Fallbacks[e.index[name]]; f.Answers != n {
			f.Answers, e.dirty = n, true
		}
	}
	if e.rung != "" {
		before := e.rec.Fallbacks[e.index[e.rung]].Answers
		r.updateRungsLocked(e, r.requests())
		if e.rec.Fallbacks[e.index[e.rung]].Answers != before {
			e.dirty = true
		}
	}
	return sum
}

func (r *Recorder) closeLocked(e *entry, status string, now time.Time) {
	r.countLocked(e, now)
	if e.rung != "" {
		e.rungDone[e.rung] += r.requests() - e.rungReq
		e.rung = ""
	}
	end := now.UTC()
	e.rec.Status, e.rec.End, e.rec.Recovered = status, &end, status == StatusRecovered
	c := r.conditionsLocked(now)
	e.rec.Latest = &c
	e.rec.Rev++
	e.rec.Updated = end
	delete(r.open, e.rec.Kind)
	switch e.rec.Kind {
	case KindFailMode:
		r.failOpenRec.Store(false)
	case KindTargetingFallback:
		r.targetOpenRec.Store(false)
	}
	r.closed = append(r.closed, e.rec)
	if n := len(r.closed) - r.o.MaxClosed; n > 0 {
		r.dropped += n
		r.closed = append(r.closed[:0:0], r.closed[n:]...)
	}
	r.log.Info("incident closed", zap.String("incident", e.rec.ID), zap.String("kind", e.rec.Kind), zap.String("status", status),
		zap.Duration("lasted", end.Sub(e.rec.Start)), zap.String("summary", e.rec.Summary(now)))
}

func addDetail(rec *Record, d string) {
	for _, x := range rec.Detail {
		if x == d {
			return
		}
	}
	if len(rec.Detail) < maxDetail {
		rec.Detail = append(rec.Detail, d)
	}
}

func (r *Recorder) requests() uint64 {
	if r.o.Load == nil {
		return 0
	}
	return r.o.Load().Requests
}

// conditionsLocked are the conditions now, from the last load sample and
// the last known sync conditions.
func (r *Recorder) conditionsLocked(now time.Time) Conditions {
	c := Conditions{At: now.UTC(), RPS: r.sample.rps, ErrorRate: r.sample.errorRate,
		Version: r.sync.Version, Hash: r.sync.Hash, State: r.sync.State, NATS: r.sync.NATS, Breaker: r.sync.Breaker}
	if r.o.Load != nil {
		c.InFlight = r.o.Load().InFlight
	}
	if !r.sync.LastSync.IsZero() {
		c.LagSeconds = max(0, now.Sub(r.sync.LastSync).Seconds())
	}
	return c
}

// Take implements telemetry.Source: the records that changed since the
// previous Take (open ones with their counts so far, and those closed
// since), nil when none did. It also closes the per-answer records that
// have been quiet for QuietFor.
func (r *Recorder) Take() (json.RawMessage, error) {
	var sc SyncConditions
	if r.o.Sync != nil {
		sc = r.o.Sync() // outside r.mu: it may lock the sync component
	}
	var errs uint64
	if r.o.Errors != nil {
		errs = r.o.Errors() // outside r.mu: it gathers metrics
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	if r.o.Sync != nil {
		r.sync = sc
	}
	r.sampleLocked(now, errs)
	if !r.startPoll.IsZero() && now.Sub(r.startPoll) >= r.o.StartGrace && r.open[KindPushLost] == nil {
		r.openStartLocked(KindPushLost, r.startWhy, now)
	}
	for _, e := range r.open {
		ans := r.countLocked(e, now)
		if ans != e.lastAns {
			e.lastAns, e.quiet = ans, now
		}
		if r.quietLocked(e, now) {
			r.closeLocked(e, StatusRecovered, now)
		}
	}
	out := Payload{Boot: r.boot, Records: r.closed}
	for _, e := range r.open {
		if e.dirty || now.Sub(e.sentAt) >= r.o.Resend {
			c := r.conditionsLocked(now)
			e.rec.Latest = &c
			e.rec.Rev++
			e.rec.Updated = now.UTC()
			e.dirty, e.sentAt = false, now
			out.Records = append(out.Records, e.rec)
		}
	}
	if r.dropped > 0 {
		r.log.Warn("closed incident records dropped before shipping: too many in one interval", zap.Int("dropped", r.dropped), zap.Int("maxClosed", r.o.MaxClosed))
		r.dropped = 0
	}
	r.closed = nil
	if len(out.Records) == 0 && r.greeted {
		return nil, nil
	}
	r.greeted = true
	if out.Records == nil {
		out.Records = []Record{}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// quietLocked reports whether a per-occurrence record has seen nothing new
// for QuietFor.
func (r *Recorder) quietLocked(e *entry, now time.Time) bool {
	switch e.rec.Kind {
	case KindFailMode, KindTargetingFallback:
		return now.Sub(e.quiet) >= r.o.QuietFor
	case KindCacheBypass:
		return !r.bypassOn && !r.bypassOff.IsZero() && now.Sub(r.bypassOff) >= r.o.QuietFor
	case KindSignatureRejected:
		return now.Sub(e.lastAt) >= r.o.QuietFor
	}
	return false
}

func (r *Recorder) sampleLocked(now time.Time, errs uint64) {
	if r.o.Load == nil {
		return
	}
	l := r.o.Load()
	dt := now.Sub(r.sample.at).Seconds()
	if dt <= 0 {
		return
	}
	dReq := l.Requests - min(l.Requests, r.sample.req)
	dErr := errs - min(errs, r.sample.err)
	r.sample.rps = float64(dReq) / dt
	r.sample.errorRate = 0
	if dReq > 0 {
		r.sample.errorRate = min(1, float64(dErr)/float64(dReq))
	}
	r.sample.at, r.sample.req, r.sample.err = now, l.Requests, errs
}

// Open returns copies of the records open now, for status pages and tests.
func (r *Recorder) Open() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	out := make([]Record, 0, len(r.open))
	for _, e := range r.open {
		r.countLocked(e, now)
		rec := e.rec
		rec.Fallbacks = append([]Fallback(nil), e.rec.Fallbacks...)
		rec.Detail = append([]string(nil), e.rec.Detail...)
		out = append(out, rec)
	}
	return out
}
