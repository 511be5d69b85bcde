package flagsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

// A sidecar trusts signatures, not transports: whoever can publish on the
// live subject, answer for the control plane's address or write the state
// dir can hand it bytes, but only the control plane can sign them. Every
// pushed changeset, snapshot (poll, fresh, disk) and heartbeat is verified
// here before anything acts on it; what fails is never served, is counted in
// pennon_sync_rejected_total{kind,why}, shown in /v1/status and logged once
// per source until that source delivers something valid again.

// Rejection kinds (the source of the input).
const (
	rejectChangeset = "changeset" // pushed on the live subject
	rejectCatchUp   = "catchup"   // from the control plane's signed-changesets endpoint
	rejectSnapshot  = "snapshot"  // from the control plane's snapshot endpoint
	rejectDisk      = "disk"      // the last-known-good copy
	rejectHeartbeat = "heartbeat"
)

// Rejection reasons beyond the signature errors.
const (
	whyUnsigned     = "unsigned"
	whyUnknownKey   = "unknown-key"
	whyBadSignature = "bad-signature"
	whyMalformed    = "malformed"
	whyWrongEnv     = "wrong-env"
	whyWrongVersion = "wrong-version"
	whyHashMismatch = "hash-mismatch"
	whyNoTrust      = "no-trusted-key"
	whyStale        = "stale"
)

// Rejection is the last input this sidecar refused, for /v1/status.
type Rejection struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Why     string    `json:"why"`
	Version uint64    `json:"version,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// rejectionRelog is how long one (kind, why) stays quiet in the log after
// it was logged; repeats in between are only counted (and the next log line
// says how many there were), so a flood of forged messages cannot flood the
// log, and a problem that persists for hours is not forgotten either. Valid
// input does not reset it: valid and forged input may interleave (a forger
// next to the real heartbeats), and that must not become one line per forgery.
const rejectionRelog = 15 * time.Minute

type rejLog struct {
	at         time.Time
	suppressed int
}

// heartbeatMaxAge bounds how old a signed heartbeat may be: a recorded one
// replayed later must not grant a lease. Generous, because pod clocks drift.
const heartbeatMaxAge = time.Minute

// heartbeatReorder is how much older than the newest accepted heartbeat a
// heartbeat may be (replicas' clocks differ a little); older is a replay.
const heartbeatReorder = 5 * time.Second

// verifier holds the keys a sidecar trusts and its rejection bookkeeping.
type verifier struct {
	pinned bool // keys came from --trust-key: never replaced by fetched ones

	mu        sync.Mutex
	trust     *sign.Trust
	fetchedAt time.Time
	warnedTOF bool
	logged    map[string]rejLog // "kind/why" → when last logged and how many since
	last      *Rejection
	lastHB    time.Time // time of the last accepted heartbeat (replay guard)

	mRejected *prometheus.CounterVec
	mRewinds  prometheus.Counter
}

func newVerifier(o RemoteOptions) *verifier {
	v := &verifier{pinned: len(o.TrustKeys) > 0, logged: map[string]rejLog{},
		mRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_sync_rejected_total",
			Help: "Input refused before serving it (pushed changesets, snapshots, disk copy, heartbeats), by kind and reason."}, []string{"kind", "why"}),
		mRewinds: prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_sync_rewinds_total",
			Help: "Times this sidecar replaced its flag set with the control plane's at a lower version or with another hash (restore from backup, drift)."}),
	}
	if v.pinned {
		v.trust = sign.NewTrust(o.TrustKeys...)
	}
	if o.Registry != nil {
		o.Registry.MustRegister(v.mRejected, v.mRewinds)
	}
	return v
}

func (v *verifier) keys() *sign.Trust {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.trust
}

// setFetched installs keys fetched from the control plane (or the state
// dir) when nothing is pinned.
func (v *verifier) setFetched(keys []sign.PublicKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pinned || len(keys) == 0 {
		return
	}
	v.trust = sign.NewTrust(keys...)
}

func whyOf(err error) string {
	switch {
	case errors.Is(err, sign.ErrUnsigned):
		return whyUnsigned
	case errors.Is(err, sign.ErrUnknownKey):
		return whyUnknownKey
	case errors.Is(err, sign.ErrMalformed):
		return whyMalformed
	}
	return whyBadSignature
}

// reject records refused input: always counted and kept as the last
// rejection; logged once per source and reason (kind, why), then at most
// every rejectionRelog with the number of repeats in between.
func (r *Remote) reject(kind, why string, version uint64, err error) {
	v := r.v
	v.mRejected.WithLabelValues(kind, why).Inc()
	if h := r.incidents(); h != nil {
		h.Rejected(kind, why, version)
	}
	rej := &Rejection{Time: time.Now().UTC(), Kind: kind, Why: why, Version: version}
	if err != nil {
		rej.Detail = err.Error()
	}
	key := kind + "/" + why
	v.mu.Lock()
	v.last = rej
	l := v.logged[key]
	logIt := l.at.IsZero() || time.Since(l.at) >= rejectionRelog
	suppressed := l.suppressed
	if logIt {
		v.logged[key] = rejLog{at: time.Now()}
	} else {
		l.suppressed++
		v.logged[key] = l
	}
	v.mu.Unlock()
	if logIt {
		fields := []zap.Field{zap.String("kind", kind), zap.String("why", why), zap.Uint64("version", version), zap.Int("repeatsSinceLastLog", suppressed)}
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		r.log.Error("input rejected: not served (further rejections from this source are only counted in pennon_sync_rejected_total)", fields...)
	}
}

// lastRejection is for Status.
func (r *Remote) lastRejection() *Rejection {
	r.v.mu.Lock()
	defer r.v.mu.Unlock()
	if r.v.last == nil {
		return nil
	}
	c := *r.v.last
	return &c
}

// ensureTrust makes sure there is a key to verify with: pinned keys, or
// (trust on first use) the control plane's /api/v1/signing-keys fetched
// with the API token. refresh asks for a re-fetch (a signature by a key we
// do not know: the control plane may have rotated), at most once per poll
// interval. Pinned keys are never replaced.
func (r *Remote) ensureTrust(ctx context.Context, refresh bool) {
	v := r.v
	v.mu.Lock()
	need := !v.pinned && (v.trust.Len() == 0 || refresh) && time.Since(v.fetchedAt) >= r.o.PollInterval
	if need {
		v.fetchedAt = time.Now()
	}
	v.mu.Unlock()
	if !need {
		return
	}
	keys, err := r.fetchSigningKeys(ctx)
	if err != nil {
		r.log.Debug("signing keys not fetched", zap.Error(err))
		return
	}
	v.setFetched(keys)
	v.mu.Lock()
	warn := !v.warnedTOF
	v.warnedTOF = true
	v.mu.Unlock()
	if warn {
		ids := make([]string, len(keys))
		for i, k := range keys {
			ids[i] = k.ID
		}
		r.log.Warn("trusting the control plane's signing keys on first use; pin them with --trust-key (or use TLS to the control plane) to defend against a man in the middle",
			zap.Strings("keyIds", ids))
	}
	r.mu.Lock()
	r.saveLKGLocked() // remember the keys next to the disk copy for the next cold start
	r.mu.Unlock()
}

// fetchSigningKeys reads GET /api/v1/signing-keys.
func (r *Remote) fetchSigningKeys(ctx context.Context) ([]sign.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", r.o.ServerURL+"/api/v1/signing-keys", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.o.Token)
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("signing keys: control plane answered %d: %s", resp.StatusCode, b)
	}
	var body struct {
		Keys []struct {
			Key string `json:"key"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	var out []sign.PublicKey
	for _, k := range body.Keys {
		pk, err := sign.ParsePublicKey(k.Key)
		if err != nil {
			return nil, fmt.Errorf("signing keys: %w", err)
		}
		out = append(out, pk)
	}
	if len(out) == 0 {
		return nil, errors.New("signing keys: the control plane lists none (it runs without a signing key)")
	}
	return out, nil
}

// verifyChangeset checks one stored changeset's bytes as the control plane
// signed them: signature, then env, version (== its stream sequence) and
// previous version, and that it names the hash of the result. why is "" when
// it is valid.
func (r *Remote) verifyChangeset(seq uint64, data []byte, sig string) (*config.Changeset, string, error) {
	trust := r.v.keys()
	if trust.Len() == 0 {
		return nil, whyNoTrust, errors.New("no trusted signing key yet (pin one with --trust-key, or let the sidecar reach the control plane)")
	}
	if err := trust.Verify(sign.PurposeChangeset, data, sig); err != nil {
		return nil, whyOf(err), err
	}
	var cs config.Changeset
	if err := json.Unmarshal(data, &cs); err != nil {
		return nil, whyMalformed, err
	}
	switch {
	case cs.Env != r.o.Env:
		return nil, whyWrongEnv, fmt.Errorf("changeset names env %q", cs.Env)
	case cs.Version != seq || cs.PrevVersion != seq-1:
		return nil, whyWrongVersion, fmt.Errorf("changeset says version %d after %d, delivered as %d", cs.Version, cs.PrevVersion, seq)
	case cs.Hash == "":
		return nil, whyMalformed, errors.New("signed changeset names no result hash")
	}
	cs.Foreign = ""
	return &cs, "", nil
}

// verifyRecord checks that a snapshot record is the control plane's: its
// own snapshot signature, or (for a record this sidecar built by applying a
// changeset) the signed changeset it came from, naming the same env,
// version, time and result hash. The document's hash is checked by install.
func (r *Remote) verifyRecord(rec *config.SnapshotRecord, proof *config.SignedChangeset) (string, error) {
	if rec.Env != r.o.Env {
		return whyWrongEnv, fmt.Errorf("snapshot is for env %q", rec.Env)
	}
	trust := r.v.keys()
	if trust.Len() == 0 {
		return whyNoTrust, errors.New("no trusted signing key to verify it (pin one with --trust-key)")
	}
	if rec.Signature != "" || proof == nil {
		if err := trust.Verify(sign.PurposeSnapshot, rec.SigningBytes(), rec.Signature); err != nil {
			return whyOf(err), err
		}
		return "", nil
	}
	cs, why, err := r.verifyChangeset(proof.Version, proof.Data, proof.Signature)
	if why != "" {
		return why, err
	}
	if cs.Version != rec.Version || cs.Hash != rec.Hash || !cs.Time.Equal(rec.Time) {
		return whyHashMismatch, fmt.Errorf("record v%d %s does not match its signed changeset v%d %s", rec.Version, rec.Hash, cs.Version, cs.Hash)
	}
	return "", nil
}

// verifyHeartbeat checks a heartbeat's signature, env and age; a heartbeat
// older than the last accepted one is a replay.
func (r *Remote) verifyHeartbeat(hb *config.Heartbeat) (string, error) {
	trust := r.v.keys()
	if trust.Len() == 0 {
		return whyNoTrust, errors.New("no trusted signing key yet")
	}
	if err := trust.Verify(sign.PurposeHeartbeat, hb.SigningBytes(), hb.Signature); err != nil {
		return whyOf(err), err
	}
	if hb.Env != r.o.Env {
		return whyWrongEnv, fmt.Errorf("heartbeat for env %q", hb.Env)
	}
	if age := time.Since(hb.Time); age > heartbeatMaxAge {
		return whyStale, fmt.Errorf("heartbeat from %s is %s old", hb.Time.Format(time.RFC3339), age.Round(time.Second))
	}
	r.v.mu.Lock()
	defer r.v.mu.Unlock()
	// Several control-plane replicas publish heartbeats with slightly
	// different clocks, hence the tolerance.
	if hb.Time.Before(r.v.lastHB.Add(-heartbeatReorder)) {
		return whyStale, fmt.Errorf("heartbeat from %s is older than one already accepted (replay)", hb.Time.Format(time.RFC3339Nano))
	}
	if hb.Time.After(r.v.lastHB) {
		r.v.lastHB = hb.Time
	}
	return "", nil
}

// verifiedPush parses and verifies a message from the live subject.
func (r *Remote) verifiedPush(ctx context.Context, m *nats.Msg) (*config.Changeset, *config.SignedChangeset, bool) {
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		r.reject(rejectChangeset, whyMalformed, 0, errors.New("pushed changeset without a Nats-Sequence header"))
		return nil, nil, false
	}
	sig := m.Header.Get(config.SignatureHeader)
	cs, why, err := r.verifyChangeset(seq, m.Data, sig)
	if why == whyUnknownKey || why == whyNoTrust {
		// The control plane may have rotated its key (or we never got it):
		// re-fetch (unpinned sidecars only, rate-limited) and retry once.
		r.ensureTrust(ctx, true)
		cs, why, err = r.verifyChangeset(seq, m.Data, sig)
	}
	if why != "" {
		r.reject(rejectChangeset, why, seq, err)
		return nil, nil, false
	}
	return cs, &config.SignedChangeset{Version: seq, Data: m.Data, Signature: sig}, true
}

// catchUp replays the signed changesets after the version we serve up to
// (not including) `to`, fetched from the control plane, each verified as if
// pushed. It reports whether the sidecar reached to-1; on any failure the
// caller takes a snapshot instead.
func (r *Remote) catchUp(ctx context.Context, to uint64) bool {
	cur := r.currentRec()
	if cur == nil || to <= cur.Version+1 {
		return cur != nil
	}
	if err := r.breaker.Allow(); err != nil {
		return false
	}
	list, err := r.getSignedChangesets(ctx, cur.Version, to-1-cur.Version)
	r.breaker.Done(err)
	if err != nil {
		r.mFailures.Inc()
		r.log.Debug("catch-up by replay failed; taking a snapshot", zap.Error(err))
		return false
	}
	for _, sc := range list {
		if sc.Version >= to {
			break
		}
		cs, why, err := r.verifyChangeset(sc.Version, sc.Data, sc.Signature)
		if why != "" {
			r.reject(rejectCatchUp, why, sc.Version, err)
			return false
		}
		sc := sc
		if !r.applyVerified(ctx, cs, &sc, "catchup") {
			return false
		}
	}
	cur = r.currentRec()
	return cur != nil && cur.Version == to-1
}

func (r *Remote) getSignedChangesets(ctx context.Context, after, limit uint64) ([]config.SignedChangeset, error) {
	u := r.o.ServerURL + "/api/v1/envs/" + url.PathEscape(r.o.Env) + "/signed-changesets?after=" + strconv.FormatUint(after, 10) +
		"&limit=" + strconv.FormatUint(limit, 10)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.o.Token)
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("signed changesets: control plane answered %d: %s", resp.StatusCode, b)
	}
	var list []config.SignedChangeset
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("signed changesets: %w", err)
	}
	return list, nil
}

func (r *Remote) currentRec() *config.SnapshotRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec
}
