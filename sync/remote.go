package flagsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/sign"
)

// Sync states, the rungs of the degradation ladder, best first.
const (
	StateStarting = "starting"
	StatePush     = "push"     // NATS live and current
	StatePolling  = "polling"  // NATS down or silent: polling the control plane
	StateDisk     = "disk"     // serving the last known good copy from disk
	StateDefaults = "defaults" // serving the secure defaults file
)

// RemoteOptions configure a Remote.
type RemoteOptions struct {
	Env       string // required
	ServerURL string // control plane, e.g. http://127.0.0.1:8080; required
	NATSURL   string // e.g. nats://127.0.0.1:4222; empty: polling only
	NATSCA    string // PEM file of CAs that sign the NATS servers' TLS certificates; optional
	Token     string // API token (a viewer token is enough)
	StateDir  string // where the last-known-good copy lives; empty: none
	Defaults  string // secure defaults flag file; optional
	// TrustKeys pins the control plane's signing keys (--trust-key). Empty:
	// the keys are fetched from /api/v1/signing-keys with Token at bootstrap
	// (trust on first use) and re-fetched when the control plane rotates.
	TrustKeys []sign.PublicKey
	ID        string // this sidecar's name in reports; default hostname:pid

	PollInterval   time.Duration // when push is down; default 5s (± 20% jitter)
	ReconcileEvery time.Duration // full check even while push works; default 30s
	// SilenceAfter: no heartbeat for this long means push is broken;
	// default 3s (three missed heartbeats).
	SilenceAfter time.Duration
	// LeaseFor: how long a matching heartbeat vouches for freshness; default 3s.
	LeaseFor time.Duration
	// RefreshTTL: background-refresh flags trigger a refresh when the local
	// copy is older than this; default 30s.
	RefreshTTL  time.Duration
	HTTPTimeout time.Duration // default 2s
	Logger      *zap.Logger
	Registry    prometheus.Registerer
}

// Remote keeps a sidecar's flag set in step with the control plane: pushed
// changesets over NATS (in version order, gaps caught up before anything
// newer is applied), polling with jitter when push breaks, the last known
// good copy on disk when the control plane is unreachable, and secure
// defaults when there is nothing else. It implements proxy.Source,
// proxy.FreshSource and proxy.StatusSource.
type Remote struct {
	evaluator.Holder
	o       RemoteOptions
	log     *zap.Logger
	http    *http.Client
	breaker *Breaker
	creds   *natsCreds                // NATS credentials from the control plane (natscreds.go)
	fresh   freshGate                 // coalesces always-fresh checks (fresh.go)
	v       *verifier                 // trusted keys and rejections (verify.go)
	nc      atomic.Pointer[nats.Conn] // the live NATS connection, for telemetry (telemetry.go)

	inc atomic.Pointer[incidentBox] // incident hook (incidents.go)
	lkg *lkgWriter                  // writes the last-known-good copy (disk.go); nil without StateDir

	mu          sync.Mutex // guards everything below and serialises installs
	state       string
	doc         *config.Document
	rec         *config.SnapshotRecord  // without Document (doc is it); built from a changeset: no FlagVersions either (see applyVerified)
	proof       *config.SignedChangeset // vouches for an unsigned rec built from a pushed changeset
	lastSync    time.Time               // last time we confirmed we were current
	lastHB      time.Time
	leaseUntil  time.Time
	lastErr     string
	lkgErr      string // why the disk copy was not used, if it was not
	natsUp      bool
	authErr     string           // why the control plane or NATS refused us, until it accepts us again
	credsUntil  time.Time        // when the current NATS credentials expire
	rotating    bool             // a planned reconnect (credential renewal) is under way
	closing     bool             // Run is closing its NATS connection: the disconnect is ours, not a loss of push
	defaultsDoc *config.Document // the secure defaults, while they are served
	natsSince   time.Time        // when the NATS connection last came up
	behindSince time.Time        // first heartbeat announcing a version we do not have yet
	transitions map[string]int

	kick chan struct{} // asks the loop for an immediate poll

	mState    *prometheus.GaugeVec
	mVersion  prometheus.Gauge
	mDelay    prometheus.Histogram
	mApplied  *prometheus.CounterVec
	mGaps     prometheus.Counter
	mFailures prometheus.Counter
}

// NewRemote validates o.
func NewRemote(o RemoteOptions) (*Remote, error) {
	if o.Env == "" || o.ServerURL == "" {
		return nil, errors.New("remote sync: Env and ServerURL are required")
	}
	if _, err := url.Parse(o.ServerURL); err != nil {
		return nil, fmt.Errorf("remote sync: server URL: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.PollInterval, 5*time.Second)
	def(&o.ReconcileEvery, 30*time.Second)
	def(&o.SilenceAfter, 3*time.Second)
	def(&o.LeaseFor, 3*time.Second)
	def(&o.RefreshTTL, 30*time.Second)
	def(&o.HTTPTimeout, 2*time.Second)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.ID == "" {
		h, _ := os.Hostname()
		o.ID = h + ":" + strconv.Itoa(os.Getpid())
	}
	r := &Remote{o: o, log: o.Logger.With(zap.String("env", o.Env)), http: &http.Client{Timeout: o.HTTPTimeout},
		breaker: &Breaker{Base: o.PollInterval / 4, Max: 4 * o.PollInterval}, state: StateStarting,
		transitions: map[string]int{}, kick: make(chan struct{}, 1),
		mState:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pennon_sync_state", Help: "1 for the current sync state (push, polling, disk, defaults, starting)."}, []string{"state"}),
		mVersion: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pennon_sync_version", Help: "Flag-set version this sidecar serves."}),
		mDelay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pennon_propagation_delay_seconds", Help: "Commit time to applied here.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		mApplied:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_sync_applied_total", Help: "Versions applied, by how they arrived."}, []string{"via"}),
		mGaps:     prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_sync_gaps_total", Help: "Gaps detected in the pushed changeset sequence."}),
		mFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_sync_failures_total", Help: "Failed calls to the control plane."}),
	}
	if o.Registry != nil {
		o.Registry.MustRegister(r.mState, r.mVersion, r.mDelay, r.mApplied, r.mGaps, r.mFailures)
	}
	var err error
	if r.creds, err = newNATSCreds(r); err != nil {
		return nil, err
	}
	r.v = newVerifier(o)
	if o.StateDir != "" {
		r.lkg = newLKGWriter(o.StateDir, o.Env, r.log, r.v.keys)
	}
	r.setStateLocked(StateStarting, "")
	return r, nil
}

// setStateLocked records a ladder transition, logged once per change.
func (r *Remote) setStateLocked(state, why string) {
	if r.state == state && r.transitions[state] > 0 {
		return
	}
	from := r.state
	r.state = state
	r.transitions[state]++
	for _, s := range []string{StateStarting, StatePush, StatePolling, StateDisk, StateDefaults} {
		v := 0.0
		if s == state {
			v = 1
		}
		r.mState.WithLabelValues(s).Set(v)
	}
	if from != state {
		r.log.Info("sync state changed", zap.String("from", from), zap.String("to", state), zap.String("why", why))
		r.noteStateLocked(from, state, why)
	}
}

// Run syncs until ctx ends. It owns the NATS connection and every goroutine
// it starts.
func (r *Remote) Run(ctx context.Context) error {
	// From the moment ctx ends, a NATS disconnect is the stop, not a loss
	// of push: our own Close calls the disconnect handler, and in
	// `pennon dev` the embedded NATS server stops alongside this loop.
	r.mu.Lock()
	r.closing = false
	r.mu.Unlock()
	defer context.AfterFunc(ctx, r.markClosing)()
	var nc *nats.Conn
	msgs := make(chan *nats.Msg, 1024)
	hbs := make(chan *nats.Msg, 16)
	renew := time.NewTimer(time.Hour)
	defer renew.Stop()
	// NATS needs credentials from the control plane: when it cannot be
	// reached yet, poll meanwhile and try NATS again later.
	var natsRetry <-chan time.Time
	connect := func() {
		c, err := r.connectNATS(msgs, hbs)
		if err != nil {
			if natsRetry == nil {
				r.log.Warn("NATS not connected; polling until it is", zap.String("nats", RedactURL(r.o.NATSURL)), zap.Error(err))
			}
			natsRetry = time.After(jitter(r.o.PollInterval, 0.2))
			return
		}
		nc, natsRetry = c, nil
		r.nc.Store(c)
		r.scheduleRenewal(renew)
	}
	defer func() {
		r.nc.Store(nil)
		if nc != nil {
			r.markClosing() // Close calls the disconnect handler
			nc.Close()
		}
	}()
	if r.o.NATSURL != "" {
		connect()
	}
	if r.lkg != nil {
		// The writer stops after this loop has: its context ends when Run
		// returns, not with ctx, so it writes the last record installed.
		wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); r.lkg.run(wctx) }()
		defer func() { stop(); <-done }()
	}
	// Bootstrap from the control plane first (bounded by HTTPTimeout) and
	// fall down the ladder to the disk copy or the secure defaults only if
	// that fails: a cold start next to a healthy control plane never serves
	// defaults, and never says it does.
	r.poll(ctx)
	if r.Current() == nil {
		r.bootstrapLocal()
	}
	poll := time.NewTimer(jitter(r.o.PollInterval, 0.2))
	defer poll.Stop()
	silence := time.NewTicker(max(r.o.SilenceAfter/2, 10*time.Millisecond))
	defer silence.Stop()
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	// Reconciliation even while push works, spread over the whole period so
	// a fleet started together does not poll in waves: the first one at a
	// random point of the period, then every period ± 50 %.
	lastReconcile, reconcileAfter := time.Now(), time.Duration(rand.Int64N(int64(r.o.ReconcileEvery)+1))
	for {
		select {
		case <-ctx.Done():
			if nc != nil {
				r.publishReport(nc)
				_ = nc.FlushTimeout(time.Second) // the last report goes out; Close (deferred) follows
			}
			return nil
		case m := <-msgs:
			r.onChangeset(ctx, m)
			if nc != nil {
				r.publishReport(nc)
			}
		case m := <-hbs:
			r.onHeartbeat(ctx, m)
		case <-r.kick:
			r.poll(ctx)
		case <-natsRetry:
			connect()
		case <-renew.C:
			if nc != nil {
				r.renewNATS(ctx, nc)
				r.scheduleRenewal(renew)
			}
		case <-report.C:
			if nc != nil {
				r.publishReport(nc)
			}
		case <-silence.C:
			if r.checkSilence() {
				r.poll(ctx) // push went quiet: confirm with the control plane now
			}
		case <-poll.C:
			if !r.pushHealthy() || time.Since(lastReconcile) >= reconcileAfter {
				r.poll(ctx)
				lastReconcile, reconcileAfter = time.Now(), jitter(r.o.ReconcileEvery, 0.5)
			}
			poll.Reset(jitter(r.o.PollInterval, 0.2))
		}
	}
}

// markClosing records that Run is stopping: a NATS disconnect from now on
// changes no state and opens no incident (natsDown).
func (r *Remote) markClosing() {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
}

func (r *Remote) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Remote) setNATS(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.natsUp = up
	if !up && r.state == StatePush {
		r.setStateLocked(StatePolling, "NATS disconnected")
	}
}

// pushHealthy: connected and heard a heartbeat recently.
func (r *Remote) pushHealthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.natsUp && time.Since(r.lastHB) < r.o.SilenceAfter
}

// bootstrapLocal serves the disk copy, or the defaults, until the control
// plane answers.
func (r *Remote) bootstrapLocal() {
	if r.o.StateDir != "" {
		f, err := readLKGFile(r.o.StateDir, r.o.Env)
		switch {
		case err == nil:
			if keys := f.trustKeys(); len(keys) > 0 {
				r.v.setFetched(keys) // kept from the last run; ignored when keys are pinned
			}
			if err := r.installChecked(f.rec, f.Proof, "disk", StateDisk, nil); err == nil {
				return
			} else {
				r.log.Warn("last-known-good copy unusable", zap.Error(err))
				r.mu.Lock()
				r.lkgErr = err.Error()
				r.mu.Unlock()
			}
		case !errors.Is(err, os.ErrNotExist):
			r.log.Warn("last-known-good copy ignored", zap.Error(err))
			r.mu.Lock()
			r.lkgErr = err.Error()
			r.mu.Unlock()
		}
	}
	if r.o.Defaults != "" {
		if err := r.installDefaults(); err != nil {
			r.log.Error("secure defaults unusable", zap.String("file", r.o.Defaults), zap.Error(err))
		}
	}
}

// installDefaults serves the defaults file: every flag answers from it with
// metadata saying why, so callers can tell defaults from real answers.
func (r *Remote) installDefaults() error {
	data, err := os.ReadFile(r.o.Defaults)
	if err != nil {
		return err
	}
	doc, err := config.Parse(data)
	if err != nil {
		return err
	}
	var raw map[string]any
	_ = json.Unmarshal(doc.Canonical(), &raw)
	md, _ := raw["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
	}
	md["pennonSource"] = "defaults"
	md["pennonReason"] = "control plane and last-known-good copy unavailable"
	raw["metadata"] = md
	b, _ := json.Marshal(raw)
	if doc, err = config.Parse(b); err != nil {
		return err
	}
	snap, err := doc.Compile(0)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rec != nil {
		return nil // something better arrived meanwhile
	}
	r.Store(snap)
	r.defaultsDoc = doc
	r.setStateLocked(StateDefaults, "no control plane and no last-known-good copy")
	return nil
}

// CurrentDocument returns the snapshot being served and the document it
// was compiled from, read together (flagdgrpc's sync service sends the
// document to flagd's in-process providers).
func (r *Remote) CurrentDocument() (*evaluator.Snapshot, *config.Document) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.doc == nil {
		return r.Current(), r.defaultsDoc
	}
	return r.Current(), r.doc
}

// installChecked verifies a snapshot record, vouched for by its own
// signature or by proof (the signed changeset it was built from). base is the record
// we served when the snapshot was requested: if we still serve it, a record
// at a lower version or with another hash is the control plane's truth and
// replaces ours (a rewind, logged and counted); otherwise it is stale and
// ignored.
func (r *Remote) installChecked(rec *config.SnapshotRecord, proof *config.SignedChangeset, via, state string, base *config.SnapshotRecord) error {
	kind := rejectSnapshot
	if via == "disk" {
		kind = rejectDisk
	}
	if why, err := r.verifyRecord(rec, proof); why != "" {
		r.reject(kind, why, rec.Version, err)
		return fmt.Errorf("snapshot %d rejected (%s): %w", rec.Version, why, err)
	}
	doc, err := config.Parse(rec.Document)
	if err != nil {
		return fmt.Errorf("snapshot %d: %w", rec.Version, err)
	}
	if !doc.MatchesHash(rec.Hash) { // also a legacy "sha256:" hash, kept as the record's
		err := fmt.Errorf("snapshot %d: hash mismatch (have %s, record says %s)", rec.Version, doc.HashLike(rec.Hash), rec.Hash)
		r.reject(kind, whyHashMismatch, rec.Version, err)
		return err
	}
	return r.installVerified(rec, doc, proof, nil, via, state, base)
}

// installVerified serves a verified record (see installChecked for base);
// cs is the changeset rec was built from, nil for a full record.
func (r *Remote) installVerified(rec *config.SnapshotRecord, doc *config.Document, proof *config.SignedChangeset, cs *config.Changeset, via, state string, base *config.SnapshotRecord) error {
	snap, err := doc.Compile(rec.Version)
	if err != nil {
		return err
	}
	if rec.Document != nil {
		// The bytes are doc's canonical form (their hash was checked): the
		// parsed document is kept, the bytes would only hold 16 MB at
		// 100,000 flags until the next change. The disk writer rebuilds
		// them from doc.
		kept := *rec
		kept.Document = nil
		rec = &kept
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.rec; cur != nil && state != StateDisk && (cur.Version > rec.Version || cur.Version == rec.Version && cur.Hash != rec.Hash) {
		if base == nil || cur != base {
			return nil // never go backwards on a stale or unsolicited answer
		}
		// The control plane, asked about exactly what we serve, answers
		// with another flag set: it is the truth (restore from backup,
		// same-version divergence).
		r.v.mRewinds.Inc()
		r.log.Warn("flag set replaced by the control plane's (rewind)", zap.Uint64("fromVersion", cur.Version), zap.String("fromHash", cur.Hash),
			zap.Uint64("toVersion", rec.Version), zap.String("toHash", rec.Hash), zap.String("via", via))
	}
	changed := r.rec == nil || r.rec.Version != rec.Version || r.rec.Hash != rec.Hash
	r.rec, r.doc, r.proof = rec, doc, proof
	if state != StateDisk {
		r.lastSync = time.Now()
	}
	if changed {
		r.Store(snap)
		r.mVersion.Set(float64(rec.Version))
		r.mApplied.WithLabelValues(via).Inc()
		if r.lkg != nil {
			r.lkg.offer(rec, doc, proof, cs, via != "disk") // written in the background (disk.go)
		}
	}
	r.setStateLocked(state, via)
	return nil
}

// saveLKGLocked has the served record written again, with the trusted
// keys as they are now (they changed). The write itself happens in the
// background (disk.go).
func (r *Remote) saveLKGLocked() {
	if r.lkg != nil {
		r.lkg.rewrite()
	}
}

// liveState is the state to report after a successful contact.
func (r *Remote) liveState() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Push needs both a connection and recent heartbeats: a connection that
	// carries nothing is not push.
	if r.natsUp && r.quietForLocked() < r.o.SilenceAfter {
		return StatePush
	}
	return StatePolling
}

// poll fetches the snapshot (If-None-Match our version), guarded by the breaker.
func (r *Remote) poll(ctx context.Context) {
	r.ensureTrust(ctx, false)
	base := r.currentRec()
	rec, err := r.fetchSnapshot(ctx)
	if err != nil {
		r.mu.Lock()
		r.lastErr = err.Error()
		// A failed reconciliation does not end push while pushes and
		// heartbeats still arrive: only the lease says whether push works.
		if r.state == StatePush && !(r.natsUp && r.quietForLocked() < r.o.SilenceAfter) {
			r.setStateLocked(StatePolling, "control plane unreachable: "+err.Error())
		}
		r.mu.Unlock()
		return
	}
	st := r.liveState()
	if rec == nil { // 304: still current
		r.mu.Lock()
		r.lastSync = time.Now()
		r.renewLeaseLocked() // the control plane just confirmed what we serve
		r.setStateLocked(st, "confirmed current")
		r.mu.Unlock()
		return
	}
	if err := r.installChecked(rec, nil, "poll", st, base); err != nil {
		r.mu.Lock()
		r.lastErr = err.Error()
		r.mu.Unlock()
		r.log.Error("snapshot rejected", zap.Error(err))
		return
	}
	r.mu.Lock()
	r.renewLeaseLocked() // we now serve what the control plane just sent
	r.mu.Unlock()
}

// fetchSnapshot returns nil, nil on 304.
func (r *Remote) fetchSnapshot(ctx context.Context) (*config.SnapshotRecord, error) {
	if err := r.breaker.Allow(); err != nil {
		return nil, err
	}
	rec, err := r.getSnapshot(ctx)
	r.breaker.Done(err)
	if err != nil {
		r.mFailures.Inc()
		r.credentialsFailed(err)
	}
	return rec, err
}

func (r *Remote) getSnapshot(ctx context.Context) (*config.SnapshotRecord, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", r.o.ServerURL+"/api/v1/envs/"+url.PathEscape(r.o.Env)+"/snapshot", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.o.Token)
	r.mu.Lock()
	if r.rec != nil && r.state != StateDisk {
		// Our identity (version, hash): the control plane answers 304 only
		// when both match, so drift at the same version is repaired.
		req.Header.Set("If-None-Match", `"`+strconv.FormatUint(r.rec.Version, 10)+"-"+r.rec.Hash+`"`)
	}
	report := r.reportLocked()
	r.mu.Unlock()
	// Polling sidecars appear in the fleet view through their polls: the
	// report rides on a request they make anyway.
	if b, err := json.Marshal(report); err == nil {
		req.Header.Set(config.SidecarReportHeader, string(b))
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, nil
	case http.StatusOK:
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return nil, &authError{status: resp.StatusCode, body: string(bytes.TrimSpace(b))}
		}
		return nil, fmt.Errorf("control plane answered %d: %s", resp.StatusCode, b)
	}
	var rec config.SnapshotRecord
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&rec); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &rec, nil
}

// onChangeset applies a pushed changeset if it is the next version; a
// duplicate is ignored and a gap is caught up first.
// onChangeset verifies a pushed changeset (signature over the exact bytes,
// env, version == Nats-Sequence) and applies it if it is the next version;
// a duplicate is ignored and a gap is caught up first. Anything that fails
// verification is rejected and never served.
func (r *Remote) onChangeset(ctx context.Context, m *nats.Msg) {
	cs, proof, ok := r.verifiedPush(ctx, m)
	if !ok {
		return
	}
	r.applyChangeset(ctx, cs, proof, "push")
}

// applyChangeset applies a verified changeset in version order.
func (r *Remote) applyChangeset(ctx context.Context, cs *config.Changeset, proof *config.SignedChangeset, via string) {
	r.mu.Lock()
	cur := r.rec
	r.mu.Unlock()
	switch {
	case cur == nil:
		r.poll(ctx)
		return
	case cs.Version <= cur.Version:
		return // duplicate or old
	case cs.Version > cur.Version+1:
		r.mGaps.Inc()
		r.log.Info("gap in pushed changesets, catching up", zap.Uint64("have", cur.Version), zap.Uint64("got", cs.Version))
		if !r.catchUp(ctx, cs.Version) {
			r.poll(ctx) // a fresh snapshot covers the gap and this changeset
			return
		}
	}
	r.applyVerified(ctx, cs, proof, via)
}

// applyVerified applies the next verified changeset to what we serve and
// checks the result against the hash the control plane signed: a mismatch
// means our base drifted, so we take a snapshot instead of serving it.
// Nothing here builds the document's bytes or copies its per-flag
// versions: the hash rehashes only what changed (config.Document.Hash) and the record
// leaves Document and FlagVersions empty; only the last-known-good writer
// needs them and builds them off this path (disk.go).
func (r *Remote) applyVerified(ctx context.Context, cs *config.Changeset, proof *config.SignedChangeset, via string) bool {
	r.mu.Lock()
	cur := r.rec
	r.mu.Unlock()
	if cur == nil || cs.Version != cur.Version+1 {
		return false
	}
	doc, err := r.currentDoc().Apply(cs)
	if err != nil {
		r.log.Error("changeset does not apply; resyncing", zap.Uint64("version", cs.Version), zap.Error(err))
		r.poll(ctx)
		return false
	}
	// In the format the control plane signed (a legacy "sha256:" one costs
	// O(size)), so our reports and heartbeats agree on the version's hash.
	rec := &config.SnapshotRecord{Env: r.o.Env, Version: cs.Version, Time: cs.Time, Hash: doc.HashLike(cs.Hash)}
	if rec.Hash != cs.Hash {
		r.reject(rejectChangeset, whyHashMismatch, cs.Version, fmt.Errorf("applying it to our v%d gives %s, the control plane signed %s: our flag set drifted; taking a snapshot", cur.Version, rec.Hash, cs.Hash))
		r.poll(ctx)
		return false
	}
	if err := r.installVerified(rec, doc, proof, cs, via, r.liveState(), nil); err != nil {
		r.log.Error("changeset rejected; resyncing", zap.Error(err))
		r.poll(ctx)
		return false
	}
	if !cs.Time.IsZero() {
		r.mDelay.Observe(time.Since(cs.Time).Seconds())
	}
	return true
}

func (r *Remote) currentDoc() *config.Document {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.doc
}

// onHeartbeat renews the freshness lease when we serve what the control
// plane has; a newer version means we missed something.
func (r *Remote) onHeartbeat(ctx context.Context, m *nats.Msg) {
	var hb config.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil {
		r.reject(rejectHeartbeat, whyMalformed, 0, err)
		return
	}
	why, err := r.verifyHeartbeat(&hb)
	if why == whyUnknownKey || why == whyNoTrust {
		r.ensureTrust(ctx, true) // rotated, or not fetched yet
		why, err = r.verifyHeartbeat(&hb)
	}
	if why != "" {
		r.reject(rejectHeartbeat, why, hb.Version, err)
		return // no lease, no reconcile: a forged heartbeat changes nothing
	}
	r.mu.Lock()
	r.lastHB = time.Now()
	cur := r.rec
	if cur != nil && hb.Version == cur.Version && hb.Hash == cur.Hash {
		r.leaseUntil = time.Now().Add(r.o.LeaseFor)
		r.lastSync = time.Now()
		if r.natsUp {
			r.setStateLocked(StatePush, "heartbeat matches")
		}
	}
	reconcile := false
	switch {
	case cur == nil:
		reconcile = true
	case hb.Version > cur.Version:
		// Behind. The heartbeat and the pushed changeset leave the control
		// plane together and usually arrive in either order: give the push
		// a moment before asking for a snapshot, so a fleet does not answer
		// every commit with a request (and every replica's heartbeat with
		// another).
		now := time.Now()
		if r.behindSince.IsZero() {
			r.behindSince = now
		}
		reconcile = now.Sub(r.behindSince) >= r.behindGrace()
	case hb.Version != cur.Version || hb.Hash != cur.Hash:
		// Drifted at the same version, or ahead of the control plane
		// (restored from a backup): reconcile at once.
		reconcile = true
	default:
		r.behindSince = time.Time{}
	}
	if reconcile {
		r.behindSince = time.Time{}
	}
	r.mu.Unlock()
	if reconcile {
		r.poll(ctx)
	}
}

// behindGrace is how long a sidecar that heard of a newer version waits for
// its push before reconciling: a third of the silence threshold (1 s by
// default), at least 100 ms.
func (r *Remote) behindGrace() time.Duration {
	return max(r.o.SilenceAfter/3, 100*time.Millisecond)
}

// Fresh implements proxy.FreshSource. Always-fresh checks without a lease
// are coalesced and bounded by time, not traffic (fresh.go).
func (r *Remote) Fresh(ctx context.Context, f *evaluator.Flag) (*evaluator.Snapshot, error) {
	r.mu.Lock()
	lease, last := r.leaseUntil, r.lastSync
	r.mu.Unlock()
	switch f.Propagation() {
	case evaluator.BackgroundRefresh:
		if time.Since(last) > r.o.RefreshTTL && r.fresh.pokeDue(r.freshWindow()) {
			r.poke()
		}
		return r.Current(), nil
	case evaluator.AlwaysFresh:
		if time.Now().Before(lease) {
			return r.Current(), nil
		}
		return r.freshAlways(ctx) // one shared check, bounded by time (fresh.go)
	}
	return r.Current(), nil
}

// RemoteStatus is Remote's part of /v1/status.
type RemoteStatus struct {
	Mode         string         `json:"mode"`
	Env          string         `json:"env"`
	State        string         `json:"state"`
	Version      uint64         `json:"version"`
	Hash         string         `json:"hash,omitempty"`
	NATS         bool           `json:"natsConnected"`
	Breaker      string         `json:"breaker"`
	LastSync     *time.Time     `json:"lastSync,omitempty"`
	LeaseValid   bool           `json:"leaseValid"`
	LastError    string         `json:"lastError,omitempty"`
	AuthError    string         `json:"authError,omitempty"` // the control plane or NATS refused us
	NATSCredsExp *time.Time     `json:"natsCredentialsExpire,omitempty"`
	DiskError    string         `json:"lastKnownGoodError,omitempty"`
	LastRej      *Rejection     `json:"lastRejection,omitempty"` // last input refused before serving (verify.go)
	Transitions  map[string]int `json:"transitions"`
	ServerURL    string         `json:"server"`
	StateDirFile string         `json:"lastKnownGoodFile,omitempty"`
}

// Status implements proxy.StatusSource.
func (r *Remote) Status() any {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := RemoteStatus{Mode: "remote", Env: r.o.Env, State: r.state, NATS: r.natsUp, Breaker: r.breaker.State(),
		LeaseValid: time.Now().Before(r.leaseUntil), LastError: r.lastErr, DiskError: r.lkgErr, Transitions: map[string]int{}, ServerURL: RedactURL(r.o.ServerURL), AuthError: r.authErr}
	if !r.credsUntil.IsZero() {
		t := r.credsUntil.UTC()
		st.NATSCredsExp = &t
	}
	for k, v := range r.transitions {
		st.Transitions[k] = v
	}
	st.LastRej = r.lastRejection()
	if r.lkg != nil {
		if werr, _ := r.lkg.status(); werr != "" {
			st.DiskError = strings.TrimPrefix(st.DiskError+"; ", "; ") + "not written: " + werr
		}
	}
	if r.rec != nil {
		st.Version, st.Hash = r.rec.Version, r.rec.Hash
	}
	if !r.lastSync.IsZero() {
		t := r.lastSync.UTC()
		st.LastSync = &t
	}
	if r.o.StateDir != "" {
		st.StateDirFile = lkgPath(r.o.StateDir, r.o.Env)
	}
	return st
}

// Ready implements proxy.StatusSource: ready whenever something is served;
// the detail says which rung of the ladder it came from.
func (r *Remote) Ready() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok, detail := r.readyLocked()
	if r.authErr != "" {
		detail += "; refused: " + r.authErr
	}
	return ok, detail
}

func (r *Remote) readyLocked() (bool, string) {
	switch r.state {
	case StateStarting:
		return false, "waiting for the first flag set"
	case StatePush:
		return true, "synced (push)"
	case StatePolling:
		return true, "degraded: polling the control plane"
	case StateDisk:
		return true, "degraded: serving the last known good copy from disk"
	}
	return true, "degraded: serving secure defaults"
}

// publishReport tells the control plane what this sidecar serves.
func (r *Remote) publishReport(nc *nats.Conn) {
	r.mu.Lock()
	rep := r.reportLocked()
	r.mu.Unlock()
	subject := r.creds.reportSubject()
	if subject == "" {
		return // no credentials yet: NATS would refuse it anyway
	}
	b, _ := json.Marshal(rep)
	_ = nc.Publish(subject, b)
}

// reportLocked is what this sidecar says about itself.
func (r *Remote) reportLocked() config.SidecarReport {
	rep := config.SidecarReport{ID: r.o.ID, Env: r.o.Env, State: r.state, Time: time.Now().UTC(), AppliedAt: r.lastSync.UTC()}
	if r.rec != nil {
		rep.Version, rep.Hash = r.rec.Version, r.rec.Hash
	}
	return rep
}

// checkSilence moves the sidecar off push when heartbeats stopped even
// though the NATS connection looks up (a stalled route, a partitioned
// server): the sync state follows the lease, not the TCP connection.
func (r *Remote) checkSilence() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if quiet := r.quietForLocked(); r.state == StatePush && quiet > r.o.SilenceAfter {
		r.setStateLocked(StatePolling, "no heartbeat for "+quiet.Round(time.Millisecond).String()+" with NATS connected")
		return true
	}
	return false
}

// quietForLocked is how long push has been silent: since the last
// heartbeat or, if later, since the connection came up.
func (r *Remote) quietForLocked() time.Duration {
	return time.Since(maxTime(r.lastHB, r.natsSince))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
