package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/internal/sign"
)

// Why a message in an environment's stream is foreign. They are stable
// strings: metrics, logs, the history API and `pennon doctor` show them.
const (
	ForeignUnsigned      = "unsigned"
	ForeignBadSignature  = "bad-signature"
	ForeignUnknownKey    = "unknown-key"
	ForeignUnparsable    = "unparsable"
	ForeignWrongEnv      = "wrong-env"
	ForeignWrongVersion  = "wrong-version"
	ForeignNotApplicable = "does-not-apply"
	// ForeignMissing: the message was deleted from the stream (a gap).
	ForeignMissing = "missing"
)

// maxForeignRemembered bounds the per-store memory of which foreign
// messages were already logged and counted; past it, repeats may be logged
// and counted again, which is noisy but never wrong.
const maxForeignRemembered = 100000

// signatureReason maps a sign.Trust.Verify error to a foreign reason.
func signatureReason(err error) string {
	switch {
	case errors.Is(err, sign.ErrUnsigned):
		return ForeignUnsigned
	case errors.Is(err, sign.ErrUnknownKey):
		return ForeignUnknownKey
	}
	return ForeignBadSignature
}

// SigningBytes is what a heartbeat's signature covers: its JSON with the
// Signature field empty.
func (hb Heartbeat) SigningBytes() []byte {
	hb.Signature = ""
	b, _ := json.Marshal(hb) // plain struct: cannot fail
	return b
}

// SignHeartbeat fills hb.Signature when the store has a signing key, so
// sidecars can tell the control plane's heartbeats from forged ones.
func (s *Store) SignHeartbeat(hb *Heartbeat) {
	if s.o.Signer != nil {
		hb.Signature = s.o.Signer.Sign(sign.PurposeHeartbeat, hb.SigningBytes())
	}
}

// Verifying reports whether the store checks signatures on what it reads.
// A store opened without Signer and Trust (tests, offline tools) checks only
// the structure of each message.
func (s *Store) Verifying() bool { return s.o.Trust.Len() > 0 }

// foreignChangeset is what readers get for a version whose message is not a
// valid changeset of this environment: no changes, the reason set.
func foreignChangeset(env string, v uint64, why string) *Changeset {
	return &Changeset{Env: env, Version: v, PrevVersion: v - 1, Changes: []Change{}, Foreign: why}
}

// noteForeign logs and counts a foreign message once per (env, version).
func (s *Store) noteForeign(env string, v uint64, why string, detail error) {
	key := env + "\x00" + strconv.FormatUint(v, 10)
	if v == 0 {
		key += "\x00" + why // snapshots and settings are not versions
	}
	s.mu.Lock()
	_, seen := s.foreign[key]
	if !seen && len(s.foreign) < maxForeignRemembered {
		s.foreign[key] = why
	}
	s.mu.Unlock()
	if seen {
		return
	}
	fields := []zap.Field{zap.String("env", env), zap.Uint64("version", v), zap.String("why", why)}
	if detail != nil {
		fields = append(fields, zap.Error(detail))
	}
	if why == "env-settings" {
		s.log.Error("environment settings fail their signature check: serving them fail-safe (protected, owner and expiry required) until repaired", fields...)
	} else if strings.HasPrefix(why, "snapshot-") {
		s.log.Warn("stored snapshot ignored: rebuilding the state from the changeset stream (see `pennon doctor`)", fields...)
	} else {
		s.log.Warn("foreign message in the changeset stream skipped (the environment's state is unchanged at this version; see `pennon doctor`)", fields...)
	}
	if s.o.OnForeign != nil {
		s.o.OnForeign(env, why)
	}
}

// readChangeset reads the message at version v and checks that it is a
// changeset the control plane wrote there: signed with a trusted key (when
// the store verifies), parsable, and naming this env, version v and
// previous version v-1 (so a valid changeset replayed at another position or
// into another environment is caught). A message that fails is returned as a
// foreign changeset, not as an error: errors are only for an unreachable
// store. raw is the stored message (nil when missing).
func (s *Store) readChangeset(ctx context.Context, stream jetstream.Stream, env string, v uint64) (*Changeset, *jetstream.RawStreamMsg, error) {
	msg, err := stream.GetMsg(ctx, v)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			s.noteForeign(env, v, ForeignMissing, nil)
			return foreignChangeset(env, v, ForeignMissing), nil, nil
		}
		return nil, nil, fmt.Errorf("env %s version %d: %w", env, v, err)
	}
	cs, why, detail := s.checkChangeset(env, v, msg.Data, msg.Header.Get(SignatureHeader))
	if why != "" {
		s.noteForeign(env, v, why, detail)
		return foreignChangeset(env, v, why), msg, nil
	}
	return cs, msg, nil
}

// checkChangeset verifies one stored changeset's bytes; why is "" when it
// is valid.
func (s *Store) checkChangeset(env string, v uint64, data []byte, sig string) (cs *Changeset, why string, detail error) {
	if s.Verifying() {
		if err := s.o.Trust.Verify(sign.PurposeChangeset, data, sig); err != nil {
			return nil, signatureReason(err), err
		}
	}
	cs = &Changeset{}
	if err := json.Unmarshal(data, cs); err != nil {
		return nil, ForeignUnparsable, err
	}
	switch {
	case cs.Env != env:
		return nil, ForeignWrongEnv, fmt.Errorf("body names env %q", cs.Env)
	case cs.Version != v || cs.PrevVersion != v-1:
		return nil, ForeignWrongVersion, fmt.Errorf("body says version %d after %d, stream position is %d", cs.Version, cs.PrevVersion, v)
	}
	cs.Foreign = "" // reader-only: never trust it from the wire
	return cs, "", nil
}

// step applies the changeset at st.Version+1 for a reader. Unlike advance it
// never fails: a foreign changeset, or one that does not apply, leaves the
// flag set as it is and only moves the version, so one bad message can never
// make an environment unreadable.
func (s *Store) step(st *State, cs *Changeset) *State {
	if cs.Foreign == "" {
		next, err := advance(st, cs)
		if err == nil {
			// A version's hash is the string signed for it, in its format
			// (a changeset from a control plane before the tree format
			// carries a legacy "sha256:" one; one without a hash predates
			// hashes in changesets, and such versions were always reported
			// with the legacy hash): recomputing it in another format would
			// change a version's identity under the fleet.
			if cs.Hash == "" {
				next.Hash = next.Doc.HashLike(legacyHash)
			} else if next.Hash = next.Doc.HashLike(cs.Hash); next.Hash != cs.Hash {
				s.noteDiverged(st.Env, cs.Version, cs.Hash, next.Hash)
			}
			return next
		}
		s.noteForeign(st.Env, cs.Version, ForeignNotApplicable, err)
	}
	return &State{Env: st.Env, Version: cs.Version, Time: st.Time, Doc: st.Doc, flagVersions: st.flagVersions, Hash: st.Hash}
}

// noteDiverged logs once that replaying a signed changeset did not give the
// hash it was signed with: this reader's base differs from the writer's
// (e.g. a replica that trusts a different key set).
func (s *Store) noteDiverged(env string, v uint64, want, got string) {
	key := env + "\x00diverged\x00" + strconv.FormatUint(v, 10)
	s.mu.Lock()
	_, seen := s.foreign[key]
	if !seen && len(s.foreign) < maxForeignRemembered {
		s.foreign[key] = "diverged"
	}
	s.mu.Unlock()
	if !seen {
		s.log.Error("replayed state differs from the hash the changeset was signed with", zap.String("env", env),
			zap.Uint64("version", v), zap.String("signedHash", want), zap.String("replayedHash", got))
	}
}

// verifySnapshot checks a snapshot record read from KV: signed (when the
// store verifies), for this env, and its document matches its hash.
func (s *Store) verifySnapshot(env string, rec *SnapshotRecord) (*Document, string, error) {
	if rec.Env != env {
		return nil, ForeignWrongEnv, fmt.Errorf("record names env %q", rec.Env)
	}
	if s.Verifying() {
		if err := s.o.Trust.Verify(sign.PurposeSnapshot, rec.SigningBytes(), rec.Signature); err != nil {
			return nil, signatureReason(err), err
		}
	}
	doc, err := Parse(rec.Document)
	if err != nil {
		return nil, ForeignUnparsable, err
	}
	if h := doc.HashLike(rec.Hash); h != rec.Hash {
		return nil, ForeignBadSignature, fmt.Errorf("document hash %s, record says %s", h, rec.Hash)
	}
	return doc, "", nil
}

// signRecord signs a snapshot record in place when the store has a key.
func (s *Store) signRecord(rec *SnapshotRecord) {
	if s.o.Signer != nil {
		rec.Signature = s.o.Signer.Sign(sign.PurposeSnapshot, rec.SigningBytes())
	}
}

// servedSnapshot is the memoized signed record of one (env, version, hash)
// and its JSON, so serving the current snapshot costs no canonical encoding,
// hashing or signing after the first request.
type servedSnapshot struct {
	version uint64
	hash    string
	rec     *SnapshotRecord
	json    []byte
}

// SignedSnapshot returns the environment's current signed SnapshotRecord
// and its JSON encoding. Both are built once per (version, hash) and shared:
// callers must not modify them.
func (s *Store) SignedSnapshot(ctx context.Context, env string) (*SnapshotRecord, []byte, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	return s.servedRecord(head)
}

// SignedRecord is SignedSnapshot for a head the caller already holds (the
// snapshot endpoint reads the head once, answers 304 from it, and only then
// asks for the record).
func (s *Store) SignedRecord(head *State) (*SnapshotRecord, []byte, error) {
	return s.servedRecord(head)
}

func (s *Store) servedRecord(head *State) (*SnapshotRecord, []byte, error) {
	s.mu.Lock()
	m := s.served[head.Env]
	s.mu.Unlock()
	if m != nil && m.version == head.Version && m.hash == head.Hash {
		return m.rec, m.json, nil
	}
	rec := head.Record()
	s.signRecord(rec)
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, nil, fmt.Errorf("env %s: encode snapshot %d: %w", head.Env, head.Version, err)
	}
	m = &servedSnapshot{version: head.Version, hash: head.Hash, rec: rec, json: b}
	s.mu.Lock()
	if cur := s.served[head.Env]; cur == nil || cur.version <= m.version {
		s.served[head.Env] = m
	}
	s.mu.Unlock()
	return rec, b, nil
}

// SignedChangesets returns up to limit committed changesets after version
// `after` exactly as stored (bytes and signature), for sidecars catching up
// by replay. The list stops before the first version that is foreign or
// missing: a sidecar cannot verify across it and takes a snapshot instead.
func (s *Store) SignedChangesets(ctx context.Context, env string, after uint64, limit int) ([]SignedChangeset, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	stream, err := s.js.Stream(ctx, StreamName(env))
	if err != nil {
		return nil, fmt.Errorf("env %s: stream: %w", env, err)
	}
	out := []SignedChangeset{}
	for v := after + 1; v <= head.Version && len(out) < limit; v++ {
		cs, msg, err := s.readChangeset(ctx, stream, env, v)
		if err != nil {
			return nil, err
		}
		if cs.Foreign != "" {
			break
		}
		out = append(out, SignedChangeset{Version: v, Data: msg.Data, Signature: msg.Header.Get(SignatureHeader)})
	}
	return out, nil
}

// ForeignEntry is one version of an environment whose message was skipped.
type ForeignEntry struct {
	Version uint64 `json:"version"`
	Reason  string `json:"reason"`
}

// EnvCheck is the result of checking every message of an environment's
// stream (what `pennon doctor` shows).
type EnvCheck struct {
	Env     string `json:"env"`
	Version uint64 `json:"version"` // head version
	Hash    string `json:"hash"`    // head hash
	// Verified says whether signatures were checked (the store has keys).
	Verified bool `json:"verified"`
	// Foreign lists skipped versions whose message is still in the stream
	// (repairable); Missing counts versions deleted from the stream, which
	// are skipped the same way and need no repair.
	Foreign []ForeignEntry `json:"foreign"`
	Missing uint64         `json:"missing"`
	// Truncated is set when more than MaxCheckEntries foreign entries exist.
	Truncated bool `json:"truncated,omitempty"`
	// Snapshot describes the KV snapshot: "ok", "absent", or why it is ignored.
	Snapshot string `json:"snapshot"`
}

// MaxCheckEntries bounds EnvCheck.Foreign.
const MaxCheckEntries = 1000

// Check reads every message of env's stream and reports what readers skip.
func (s *Store) Check(ctx context.Context, env string) (*EnvCheck, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	stream, err := s.js.Stream(ctx, StreamName(env))
	if err != nil {
		return nil, fmt.Errorf("env %s: stream: %w", env, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("env %s: stream info: %w", env, err)
	}
	c := &EnvCheck{Env: env, Version: head.Version, Hash: head.Hash, Verified: s.Verifying(), Foreign: []ForeignEntry{}, Snapshot: "ok"}
	if _, why, err := s.readSnapshot(ctx, env); err != nil {
		return nil, err
	} else if why != "" {
		c.Snapshot = why
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = head.Version + 1
	}
	if first > 1 {
		c.Missing += min(first-1, head.Version)
	}
	for v := max(first, 1); v <= head.Version; v++ {
		cs, _, err := s.readChangeset(ctx, stream, env, v)
		if err != nil {
			return nil, err
		}
		switch {
		case cs.Foreign == ForeignMissing:
			c.Missing++
		case cs.Foreign != "":
			if len(c.Foreign) >= MaxCheckEntries {
				c.Truncated = true
				continue
			}
			c.Foreign = append(c.Foreign, ForeignEntry{Version: v, Reason: cs.Foreign})
		}
	}
	return c, nil
}

// RepairResult says what Repair did.
type RepairResult struct {
	Env     string   `json:"env"`
	Deleted []uint64 `json:"deleted"` // versions whose foreign message was erased
	// SnapshotVersion is the version of the signed snapshot written at the
	// head, so readers no longer replay across the repaired range.
	SnapshotVersion uint64 `json:"snapshotVersion"`
}

// Repair erases foreign messages from env's stream (JetStream secure
// delete: the bytes are overwritten) and writes a signed snapshot at the
// head. Readers already skip foreign messages, so Repair changes no state
// and no version: it removes the attacker's bytes from the log and the
// history, and `pennon doctor` reports the versions as missing afterwards.
// Only a store with a signing key repairs: without one it cannot tell what
// is foreign.
func (s *Store) Repair(ctx context.Context, env string) (*RepairResult, error) {
	if s.o.Signer == nil || !s.Verifying() {
		return nil, errors.New("repair: the store has no signing key (StoreOptions.Signer/Trust), so it cannot tell foreign messages from real ones")
	}
	lock := s.envLock(env)
	lock.Lock()
	defer lock.Unlock()
	c, err := s.Check(ctx, env)
	if err != nil {
		return nil, err
	}
	stream, err := s.js.Stream(ctx, StreamName(env))
	if err != nil {
		return nil, fmt.Errorf("env %s: stream: %w", env, err)
	}
	res := &RepairResult{Env: env, Deleted: []uint64{}}
	for _, f := range c.Foreign {
		s.reads.forget(env, f.Version)
		if err := stream.SecureDeleteMsg(ctx, f.Version); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return res, fmt.Errorf("env %s: erase version %d: %w", env, f.Version, err)
		}
		res.Deleted = append(res.Deleted, f.Version)
	}
	head, err := s.Head(ctx, env)
	if err != nil {
		return res, err
	}
	if err := s.writeSnapshot(ctx, head); err != nil {
		return res, fmt.Errorf("env %s: write snapshot: %w", env, err)
	}
	res.SnapshotVersion = head.Version
	s.log.Info("environment repaired", zap.String("env", env), zap.Int("erased", len(res.Deleted)), zap.Uint64("snapshotVersion", head.Version))
	return res, nil
}

// signedMsg builds the message Commit publishes: the exact data bytes and
// their signature in the SignatureHeader header.
func (s *Store) signedMsg(subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	if s.o.Signer != nil {
		m.Header.Set(SignatureHeader, s.o.Signer.Sign(sign.PurposeChangeset, data))
	}
	return m
}
