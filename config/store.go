package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/internal/cowmap"
	"github.com/pennon-dev/pennon/internal/sign"
)

// Sentinel errors callers branch on.
var (
	ErrEnvNotFound     = errors.New("environment not found")
	ErrEnvExists       = errors.New("environment already exists")
	ErrConflict        = errors.New("conflicting change")
	ErrVersionNotFound = errors.New("version not found")
)

// EnvsBucket is the JetStream KV bucket of EnvSettings, key = env name.
const EnvsBucket = "pennon-envs"

var envNameRE = regexp.MustCompile(EnvNamePattern)

// StoreOptions configure a Store.
type StoreOptions struct {
	// Replicas for streams and buckets: 1 embedded, 3 on a cluster.
	Replicas int
	// SnapshotEvery writes a SnapshotRecord every N changesets (default 20),
	// so readers bootstrap without replaying the whole log. The write runs
	// off the commit path (store_snapshots.go); FlushSnapshots waits for it.
	SnapshotEvery int
	Logger        *zap.Logger
	// Now is the clock for changeset timestamps; nil means time.Now.
	Now func() time.Time
	// Signer signs every changeset and snapshot the store writes. Trust
	// verifies what it reads back (current and retired keys); a message
	// that fails is foreign: reported and skipped, never applied.
	Signer *sign.Key
	Trust  *sign.Trust
	// OnForeign, when set, is called once per foreign message (or ignored
	// snapshot) this store finds, with the env and the reason (one of the
	// Foreign* constants): the control plane counts them in a metric.
	OnForeign func(env, why string)
}

// EnvSettings describe one environment.
type EnvSettings struct {
	Name string `json:"name"`
	// Protected environments take writes only through approved change
	// requests (enforced by the control plane).
	Protected bool `json:"protected"`
	// Lifecycle policy for NEW flags (enforced by the control plane):
	// they must name an owner, an expiry, and expire within MaxLifetime.
	RequireOwner   bool   `json:"requireOwner,omitempty"`
	RequireExpires bool   `json:"requireExpires,omitempty"`
	MaxLifetime    string `json:"maxLifetime,omitempty"` // Go duration, e.g. 2160h
	// Lifecycle holds report thresholds and the expired-flag rule
	// (LifecyclePolicy in store_envs.go); nil: the defaults.
	Lifecycle *LifecyclePolicy `json:"lifecycle,omitempty"`
	// BusinessHours, when set, is when changes are expected; a change
	// outside them raises an out_of_hours event (business_hours.go).
	BusinessHours *BusinessHours `json:"businessHours,omitempty"`
	CreatedAt     time.Time      `json:"createdAt"`
	// Signature is the control plane's (sign.PurposeEnv) over the settings
	// with Signature and Untrusted empty.
	Signature string `json:"signature,omitempty"`
	// Untrusted is set by readers (never stored) when the stored settings
	// fail their signature check: they are then served fail-safe (protected,
	// so every write needs an approved change request) and reported.
	Untrusted bool `json:"untrusted,omitempty"`
}

// State is an environment's full flag set at one version.
type State struct {
	Env     string
	Version uint64
	Time    time.Time // commit time of Version (zero at version 0)
	Doc     *Document
	// flagVersions is, per flag, the version at which it last changed. It
	// is copy-on-write (cowmap) because every commit derives the next
	// head's from the current one: a plain map cost a 3.5 ms clone per
	// commit at 100,000 flags, this costs the one shard the change touches.
	// Read it through FlagVersion, LookupFlagVersion, FlagVersionCount and
	// AllFlagVersions; a zero State has none.
	flagVersions *cowmap.Map[uint64]
	Hash         string
}

// FlagVersion is the version at which flag last changed; 0 when the state
// does not hold it (what a Change's BaseVersion says for a new flag).
func (st *State) FlagVersion(flag string) uint64 {
	v, _ := st.LookupFlagVersion(flag)
	return v
}

// LookupFlagVersion is FlagVersion that also reports whether the state
// holds flag.
func (st *State) LookupFlagVersion(flag string) (uint64, bool) {
	if st.flagVersions == nil {
		return 0, false
	}
	return st.flagVersions.Get(flag)
}

// FlagVersionCount is the number of flags with a version.
func (st *State) FlagVersionCount() int {
	if st.flagVersions == nil {
		return 0
	}
	return st.flagVersions.Len()
}

// AllFlagVersions iterates over every flag's version, in no particular
// order. It is O(flags): per-flag reads should use FlagVersion.
func (st *State) AllFlagVersions() iter.Seq2[string, uint64] {
	if st.flagVersions == nil {
		return func(func(string, uint64) bool) {}
	}
	return st.flagVersions.All()
}

// flagVersionMap copies the per-flag versions into a plain map (O(flags)):
// the SnapshotRecord's wire form, built only when a record is encoded.
func (st *State) flagVersionMap() map[string]uint64 {
	m := make(map[string]uint64, st.FlagVersionCount())
	for k, v := range st.AllFlagVersions() {
		m[k] = v
	}
	return m
}

// flagVersionsFrom builds the copy-on-write form of a record's per-flag
// versions (nil gives an empty set).
func flagVersionsFrom(fv map[string]uint64) *cowmap.Map[uint64] {
	m := cowmap.New[uint64](len(fv))
	for k, v := range fv {
		m.Set(k, v)
	}
	return m
}

// Record returns the state as a SnapshotRecord. Its FlagVersions is a
// fresh map (O(flags), like the canonical document beside it): records
// are built for snapshots and served copies, never per commit.
func (st *State) Record() *SnapshotRecord {
	return &SnapshotRecord{Env: st.Env, Version: st.Version, Time: st.Time, Hash: st.Hash,
		Document: st.Doc.Canonical(), FlagVersions: st.flagVersionMap()}
}

// FlagConflict describes one flag a write touched that changed since the
// writer's base version.
type FlagConflict struct {
	Flag           string          `json:"flag"`
	BaseVersion    uint64          `json:"baseVersion"`
	CurrentVersion uint64          `json:"currentVersion"`
	Author         string          `json:"author,omitempty"`
	Time           time.Time       `json:"time,omitempty"`
	Current        json.RawMessage `json:"current,omitempty"`  // the flag now (absent: deleted)
	Proposed       json.RawMessage `json:"proposed,omitempty"` // what the writer sent (absent: delete)
}

// ConflictError rejects a write whose base is stale for some flags.
type ConflictError struct {
	Conflicts []FlagConflict
}

func (e *ConflictError) Error() string {
	msg := "conflict:"
	for _, c := range e.Conflicts {
		msg += fmt.Sprintf(" %s changed at version %d by %s (you based your change on %d);", c.Flag, c.CurrentVersion, c.Author, c.BaseVersion)
	}
	return msg
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Store keeps every environment's changesets in its own JetStream stream
// (stream sequence == environment version) and periodic snapshots in KV.
// Several Stores (control-plane replicas) may share one JetStream: commits
// use JetStream's expected-last-sequence check, so exactly one of two racing
// writers wins and the other re-validates against the new head.
type Store struct {
	js    jetstream.JetStream
	o     StoreOptions
	log   *zap.Logger
	envs  jetstream.KeyValue
	snaps jetstream.KeyValue

	mu      sync.Mutex
	heads   map[string]*State
	locks   map[string]*sync.Mutex // serialises commits per env within this process
	foreign map[string]string      // "env\x00version" already logged and counted

	reads  readCache // environments, stream handles, verified changesets (store_read.go)
	served map[string]*servedSnapshot
	snapw  snapshotWriter // KV snapshots written off the commit path (store_snapshots.go)
}

// OpenStore creates (or opens) the buckets the store needs.
func OpenStore(ctx context.Context, js jetstream.JetStream, o StoreOptions) (*Store, error) {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = 20
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Trust == nil && o.Signer != nil {
		o.Trust = sign.NewTrust(o.Signer.Public())
	}
	if o.Trust.Len() == 0 {
		o.Logger.Warn("store opened without signing keys: changesets and snapshots are neither signed nor verified (tests and offline tools only)")
	}
	envs, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: EnvsBucket, Replicas: o.Replicas, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("open store: envs bucket: %w", err)
	}
	snaps, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SnapshotBucket, Replicas: o.Replicas, History: 1,
		Storage: jetstream.FileStorage, MaxValueSize: 64 << 20})
	if err != nil {
		return nil, fmt.Errorf("open store: snapshots bucket: %w", err)
	}
	return &Store{js: js, o: o, log: o.Logger, envs: envs, snaps: snaps, heads: map[string]*State{}, locks: map[string]*sync.Mutex{},
		foreign: map[string]string{}, served: map[string]*servedSnapshot{}}, nil
}

// CreateEnv creates an environment at version 0 with no flags.
func (s *Store) CreateEnv(ctx context.Context, e EnvSettings) error {
	if !envNameRE.MatchString(e.Name) {
		return fmt.Errorf("name: %q is not a valid environment name (lowercase letters, digits and '-', 1-63 characters, starting with a letter or digit)", e.Name)
	}
	if e.MaxLifetime != "" {
		if d, err := time.ParseDuration(e.MaxLifetime); err != nil || d <= 0 {
			return fmt.Errorf("maxLifetime: %q is not a positive duration (e.g. 2160h for 90 days)", e.MaxLifetime)
		}
	}
	if err := e.Lifecycle.Check(); err != nil {
		return err
	}
	if err := e.BusinessHours.Check(); err != nil {
		return err
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = s.o.Now().UTC()
	}
	if _, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     StreamName(e.Name),
		Subjects: []string{LogSubject(e.Name)},
		Storage:  jetstream.FileStorage,
		Replicas: s.o.Replicas,
		// Only committed changesets are republished, with Nats-Sequence and
		// Nats-Last-Sequence headers: sidecars listen there, never on the log.
		RePublish:  &jetstream.RePublish{Source: LogSubject(e.Name), Destination: LiveSubject(e.Name)},
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardNew,
		Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("create env %s: stream: %w", e.Name, err)
	}
	data := s.encodeEnv(e)
	if _, err := s.envs.Create(ctx, e.Name, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrEnvExists
		}
		return fmt.Errorf("create env %s: %w", e.Name, err)
	}
	s.log.Info("environment created", zap.String("env", e.Name), zap.Bool("protected", e.Protected))
	return nil
}

// Env returns an environment's settings.
func (s *Store) Env(ctx context.Context, name string) (EnvSettings, error) {
	var e EnvSettings
	if !envNameRE.MatchString(name) {
		return e, ErrEnvNotFound
	}
	ent, err := s.envs.Get(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return e, ErrEnvNotFound
		}
		return e, err
	}
	return s.decodeEnv(name, ent.Value())
}

// Envs lists environments by name.
func (s *Store) Envs(ctx context.Context) ([]EnvSettings, error) {
	keys, err := s.envs.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, err
	}
	sort.Strings(keys)
	out := make([]EnvSettings, 0, len(keys))
	for _, k := range keys {
		e, err := s.Env(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Store) envLock(env string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[env]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[env] = l
	}
	return l
}

// Head returns the environment's latest state, catching up from the stream.
func (s *Store) Head(ctx context.Context, env string) (*State, error) {
	if _, err := s.knownEnv(ctx, env); err != nil {
		return nil, err
	}
	stream, err := s.stream(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("env %s: stream: %w", env, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("env %s: stream info: %w", env, err)
	}
	last := info.State.LastSeq
	s.mu.Lock()
	head := s.heads[env]
	s.mu.Unlock()
	if head == nil {
		if head, err = s.loadSnapshot(ctx, env); err != nil {
			return nil, err
		}
	}
	s.reads.noteHead(env)
	if head.Version == last {
		s.remember(head)
		return head, nil
	}
	if head.Version > last {
		// A commit acknowledged after we read the stream info: the cached
		// head is committed and newer.
		return head, nil
	}
	// Versions below the stream's first sequence were deleted (or purged):
	// skipped in one step, like any missing message.
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = last + 1
	}
	if first > head.Version+1 {
		s.noteForeign(env, head.Version+1, ForeignMissing, fmt.Errorf("versions %d-%d are not in the stream", head.Version+1, first-1))
		head = s.step(head, foreignChangeset(env, first-1, ForeignMissing))
	}
	list, err := s.readRange(ctx, stream, env, head.Version+1, last)
	if err != nil {
		return nil, err
	}
	for _, cs := range list {
		head = s.step(head, cs)
	}
	s.remember(head)
	return head, nil
}

func (s *Store) remember(st *State) {
	s.mu.Lock()
	if cur := s.heads[st.Env]; cur == nil || cur.Version < st.Version {
		s.heads[st.Env] = st
	}
	s.mu.Unlock()
}

// advance applies a committed changeset to a state.
func advance(st *State, cs *Changeset) (*State, error) {
	if cs.Version != st.Version+1 {
		return nil, fmt.Errorf("changeset version %d does not follow %d", cs.Version, st.Version)
	}
	doc, err := st.Doc.Apply(cs)
	if err != nil {
		return nil, err
	}
	return &State{Env: st.Env, Version: cs.Version, Time: cs.Time, Doc: doc, flagVersions: nextFlagVersions(st.flagVersions, cs), Hash: doc.Hash()}, nil
}

// nextFlagVersions returns the per-flag versions after cs: puts take cs's
// version, deletes drop the flag. fv (the previous head's, shared with
// readers) is not modified; the result shares every shard cs did not touch,
// so a one-flag commit copies one shard of ~32 entries where cloning a Go
// map of 100,000 flags took 3.5 ms (BenchmarkNextFlagVersions). nil fv is
// an empty set.
func nextFlagVersions(fv *cowmap.Map[uint64], cs *Changeset) *cowmap.Map[uint64] {
	if fv == nil {
		fv = cowmap.New[uint64](len(cs.Changes))
	}
	if len(cs.Changes) == 0 {
		return fv
	}
	return fv.Edit(func(e *cowmap.Editor[uint64]) {
		for _, ch := range cs.Changes {
			if ch.Op == OpDelete {
				e.Delete(ch.Flag)
			} else {
				e.Set(ch.Flag, cs.Version)
			}
		}
	})
}

func emptyState(env string) *State {
	return &State{Env: env, Doc: Empty(), flagVersions: cowmap.New[uint64](0), Hash: Empty().Hash()}
}

// loadSnapshot is where a reader starts: the KV snapshot when it is valid,
// otherwise version 0 (the whole stream is replayed). A snapshot that is
// corrupt, unsigned or badly signed is ignored, logged and counted once.
func (s *Store) loadSnapshot(ctx context.Context, env string) (*State, error) {
	st, why, err := s.readSnapshot(ctx, env)
	if err != nil {
		return nil, err
	}
	if st == nil {
		if why != "absent" {
			s.noteForeign(env, 0, "snapshot-"+why, nil)
		}
		return emptyState(env), nil
	}
	return st, nil
}

// readSnapshot reads and verifies the KV snapshot. st is nil when there is
// none ("absent") or it is unusable (why says why); err only when KV is
// unreachable.
func (s *Store) readSnapshot(ctx context.Context, env string) (st *State, why string, err error) {
	ent, err := s.snaps.Get(ctx, env)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, "absent", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("env %s: load snapshot: %w", env, err)
	}
	var rec SnapshotRecord
	if err := json.Unmarshal(ent.Value(), &rec); err != nil {
		return nil, ForeignUnparsable, nil
	}
	doc, why, _ := s.verifySnapshot(env, &rec)
	if why != "" {
		return nil, why, nil
	}
	return &State{Env: env, Version: rec.Version, Time: rec.Time, Doc: doc, flagVersions: flagVersionsFrom(rec.FlagVersions), Hash: rec.Hash}, "", nil
}

// Changeset returns one committed changeset. A version whose message is
// foreign or missing comes back marked (Foreign set, no changes), not as an
// error; a version past the head is ErrVersionNotFound.
func (s *Store) Changeset(ctx context.Context, env string, v uint64) (*Changeset, error) {
	stream, err := s.stream(ctx, env)
	if err != nil {
		return nil, ErrEnvNotFound
	}
	if v == 0 {
		return nil, fmt.Errorf("env %s version 0: %w", env, ErrVersionNotFound)
	}
	cs, err := s.cachedChangeset(ctx, stream, env, v)
	if err != nil {
		return nil, err
	}
	if cs.Foreign == ForeignMissing {
		// Past the end of the stream is "not found", not a deleted message.
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("env %s: stream info: %w", env, err)
		}
		if v > info.State.LastSeq {
			return nil, fmt.Errorf("env %s version %d: %w", env, v, ErrVersionNotFound)
		}
	}
	return cs, nil
}

// Changesets returns up to limit changesets after version `after`, in order.
func (s *Store) Changesets(ctx context.Context, env string, after uint64, limit int) ([]*Changeset, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	if after >= head.Version {
		return []*Changeset{}, nil
	}
	stream, err := s.stream(ctx, env)
	if err != nil {
		return nil, err
	}
	return s.readRange(ctx, stream, env, after+1, min(head.Version, after+uint64(limit)))
}

// History returns, newest first, up to limit changesets before version
// `before` (0: from the head) that touched flag (all when flag is "").
func (s *Store) History(ctx context.Context, env, flag string, before uint64, limit int) ([]*Changeset, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	v := head.Version
	if before > 0 && before-1 < v {
		v = before - 1
	}
	stream, err := s.stream(ctx, env)
	if err != nil {
		return nil, err
	}
	out := []*Changeset{}
	// Newest first, one page of versions per read (a flag filter may need
	// several pages).
	for v >= 1 && len(out) < limit {
		from := uint64(1)
		if v > uint64(limit) {
			from = v - uint64(limit) + 1
		}
		page, err := s.readRange(ctx, stream, env, from, v)
		if err != nil {
			return nil, err
		}
		for i := len(page) - 1; i >= 0 && len(out) < limit; i-- {
			if cs := page[i]; flag == "" || touches(cs, flag) {
				out = append(out, cs)
			}
		}
		v = from - 1
	}
	return out, nil
}

func touches(cs *Changeset, flag string) bool {
	for _, ch := range cs.Changes {
		if ch.Flag == flag {
			return true
		}
	}
	return false
}

// Snapshot returns the environment's current SnapshotRecord, signed when
// the store has a key. It is memoized per (version, hash) and shared: do not
// modify it.
func (s *Store) Snapshot(ctx context.Context, env string) (*SnapshotRecord, error) {
	rec, _, err := s.SignedSnapshot(ctx, env)
	return rec, err
}

// Commit validates and appends one changeset. It fills Version, PrevVersion
// and Time. A stale base for any flag it touches gives a *ConflictError; an
// invalid result a *ValidationError; either way nothing is written.
func (s *Store) Commit(ctx context.Context, cs *Changeset) (*Changeset, error) {
	if len(cs.Changes) == 0 && cs.Metadata == nil && cs.Evaluators == nil {
		return nil, &ValidationError{Problems: problems("changes", "a changeset needs at least one change")}
	}
	lock := s.envLock(cs.Env)
	lock.Lock()
	defer lock.Unlock()
	for attempt := 0; ; attempt++ {
		head, err := s.Head(ctx, cs.Env)
		if err != nil {
			return nil, err
		}
		if err := s.checkConflicts(ctx, head, cs); err != nil {
			return nil, err
		}
		next := *cs
		next.Env, next.Version, next.PrevVersion = cs.Env, head.Version+1, head.Version
		next.Time = s.o.Now().UTC()
		next.Foreign = ""
		st, err := advance(head, &next)
		if err != nil {
			return nil, err
		}
		next.Hash = st.Hash
		data, err := json.Marshal(&next)
		if err != nil {
			return nil, err
		}
		ack, err := s.js.PublishMsg(ctx, s.signedMsg(LogSubject(cs.Env), data), jetstream.WithExpectLastSequence(head.Version))
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) && attempt < 20 {
				// Another replica committed first: re-read, re-check, retry.
				continue
			}
			return nil, fmt.Errorf("commit to %s: %w", cs.Env, err)
		}
		if ack.Sequence != next.Version {
			return nil, fmt.Errorf("commit to %s: stream assigned sequence %d, expected %d", cs.Env, ack.Sequence, next.Version)
		}
		s.remember(st)
		if next.Version%uint64(s.o.SnapshotEvery) == 0 {
			// Written off the commit path (store_snapshots.go): encoding
			// and storing 16 MB at 100,000 flags must not hold the lock.
			s.snapshotDue(st)
		}
		if next.Emergency {
			s.log.Warn("emergency change committed", zap.String("env", cs.Env), zap.Uint64("version", next.Version), zap.String("author", next.Author), zap.String("reason", next.Reason))
		}
		return &next, nil
	}
}

func (s *Store) checkConflicts(ctx context.Context, head *State, cs *Changeset) error {
	var conflicts []FlagConflict
	for _, ch := range cs.Changes {
		cur := head.FlagVersion(ch.Flag)
		if cur == ch.BaseVersion {
			continue
		}
		c := FlagConflict{Flag: ch.Flag, BaseVersion: ch.BaseVersion, CurrentVersion: cur, Current: head.Doc.FlagJSON(ch.Flag), Proposed: ch.Definition}
		if cur > 0 {
			if by, err := s.Changeset(ctx, cs.Env, cur); err == nil {
				c.Author, c.Time = by.Author, by.Time
			}
		}
		conflicts = append(conflicts, c)
	}
	if len(conflicts) > 0 {
		return &ConflictError{Conflicts: conflicts}
	}
	return nil
}
