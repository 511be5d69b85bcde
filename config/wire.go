package config

// CONTRACT: the types and names in this file are how the control plane, the
// store and the sidecars talk to each other (JetStream messages, KV entries,
// NATS subjects, HTTP bodies). Change them only together with every user.

import (
	"encoding/json"
	"strconv"
	"time"
)

// Op is what a Change does to one flag.
type Op string

const (
	OpPut    Op = "put"
	OpDelete Op = "delete"
)

// Change is one flag put or delete inside a changeset.
type Change struct {
	Flag string `json:"flag"`
	Op   Op     `json:"op"`
	// Definition is the flag's full JSON definition (flagd format plus pennon
	// fields) for puts; absent for deletes.
	Definition json.RawMessage `json:"definition,omitempty"`
	// BaseVersion is the environment version at which the writer saw this
	// flag last change (0: the writer believes the flag does not exist).
	BaseVersion uint64 `json:"baseVersion"`
}

// Changeset is one atomic change to an environment. It is the payload of one
// message in the environment's JetStream stream, whose sequence is Version.
type Changeset struct {
	Env         string    `json:"env"`
	Version     uint64    `json:"version"`
	PrevVersion uint64    `json:"prevVersion"`
	Author      string    `json:"author"`
	Time        time.Time `json:"time"` // UTC; RFC 3339 with nanoseconds on the wire
	Reason      string    `json:"reason,omitempty"`
	Emergency   bool      `json:"emergency,omitempty"`
	// ChangeRequest is the approved change request this came from, if any.
	ChangeRequest string `json:"changeRequest,omitempty"`
	// RollbackTo is set when this changeset restores the state at that version.
	RollbackTo uint64 `json:"rollbackTo,omitempty"`
	// PromotedFrom names the environment (and version) a promotion copied from.
	PromotedFrom string   `json:"promotedFrom,omitempty"`
	Changes      []Change `json:"changes"`
	// Metadata, when non-nil, replaces the flag-set metadata; Evaluators, when
	// non-nil, replaces `$evaluators`. Both are rare and validated like flags.
	Metadata   map[string]any             `json:"metadata,omitempty"`
	Evaluators map[string]json.RawMessage `json:"evaluators,omitempty"`
	// Hash is the content hash of the environment's flag set after this
	// changeset: Document.Hash ("sha256t1:"), or the legacy "sha256:" form
	// in changesets committed before the hash tree (Document.MatchesHash
	// accepts both). It is signed with the rest, so a sidecar that
	// applies the changeset to a base that drifted ends with a different
	// hash and knows to take a snapshot instead of serving the result.
	Hash string `json:"hash,omitempty"`
	// AuditHead anchors the audit chain: the last audit entry at commit time.
	// Changesets are signed, so a chain rewritten or truncated below an
	// anchor is detectable from the environment streams alone.
	AuditHead *AuditAnchor `json:"auditHead,omitempty"`
	// Foreign is set only by readers (never written, never signed): the
	// message at this version is not a valid changeset of the control plane
	// (unsigned, badly signed, unparsable, at the wrong position, or deleted
	// from the stream) and was skipped; the value says why. Such an entry
	// carries no changes: the environment's state is unchanged at Version.
	Foreign string `json:"foreign,omitempty"`
}

// AuditAnchor names one audit entry by sequence and hash.
type AuditAnchor struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// SignatureHeader carries a changeset message's signature (sign.Key.Sign
// with sign.PurposeChangeset over the message data, exactly as stored). It
// survives the stream's RePublish, so sidecars verify what they receive.
const SignatureHeader = "Pennon-Signature"

// SignedChangeset is a committed changeset as the API hands it to sidecars
// catching up: the exact bytes stored in the stream and their signature.
type SignedChangeset struct {
	Version   uint64 `json:"version"`
	Data      []byte `json:"data"` // base64 in JSON: re-indenting must not change signed bytes
	Signature string `json:"signature"`
}

// SnapshotRecord is the full flag set of an environment at one version, as
// kept in the snapshots KV bucket and served to sidecars that bootstrap or
// poll. Document is a complete flag document (what Parse accepts).
type SnapshotRecord struct {
	Env      string          `json:"env"`
	Version  uint64          `json:"version"`
	Time     time.Time       `json:"time"`     // commit time of Version
	Hash     string          `json:"hash"`     // Document's hash as signed: "sha256t1:", or legacy "sha256:" (MatchesHash)
	Document json.RawMessage `json:"document"` // canonical JSON
	// FlagVersions is, per flag, the version at which it last changed. A
	// plain map on the wire (encoding/json writes its keys sorted, so a
	// record re-encodes to the same bytes); a State holds it copy-on-write.
	FlagVersions map[string]uint64 `json:"flagVersions"`
	// Signature is the control plane's signature (sign.PurposeSnapshot) over
	// SigningBytes(): env, version, hash (which covers Document) and time.
	Signature string `json:"signature,omitempty"`
}

// Heartbeat is what the control plane publishes every second per environment.
// A sidecar that hears it and serves Version with Hash holds a freshness lease.
type Heartbeat struct {
	Env     string    `json:"env"`
	Version uint64    `json:"version"`
	Hash    string    `json:"hash"`
	Time    time.Time `json:"time"`
	// Signature (sign.PurposeHeartbeat) over the heartbeat's JSON with
	// Signature empty: a forged heartbeat could grant a stale sidecar a
	// freshness lease.
	Signature string `json:"signature,omitempty"`
}

// SidecarReport is what a sidecar publishes about itself (on change and every
// few heartbeats) so the control plane can answer "who serves what".
type SidecarReport struct {
	ID        string    `json:"id"` // pod name or host:pid
	Env       string    `json:"env"`
	Version   uint64    `json:"version"`
	Hash      string    `json:"hash"`
	State     string    `json:"state"` // push, polling, disk, defaults, starting
	AppliedAt time.Time `json:"appliedAt"`
	// Time is when the control plane last heard from the sidecar (its own
	// clock decides, not the sidecar's).
	Time time.Time `json:"time"`
	// Via is how the report arrived: nats (push) or http (polling).
	Via string `json:"via,omitempty"`
	// Lost is set by the control plane for a sidecar silent for longer than
	// its lost-after threshold; it stays listed until forgotten.
	Lost bool `json:"lost,omitempty"`
}

// SidecarReportHeader carries a polling sidecar's SidecarReport (compact
// JSON) on its snapshot requests, so the fleet view lists sidecars that
// have no NATS path at no extra request.
const SidecarReportHeader = "Pennon-Sidecar-Report"

// NATS names. Env names match EnvNamePattern, so they are safe as subject
// tokens and stream names.
const (
	EnvNamePattern = `^[a-z0-9][a-z0-9-]{0,62}$`
	// SnapshotBucket is the JetStream KV bucket of SnapshotRecords, key = env.
	SnapshotBucket = "pennon-snapshots"
	// AuditStream holds the audit hash chain.
	AuditStream  = "PENNON_AUDIT"
	AuditSubject = "pennon.audit"
)

// StreamName is the JetStream stream holding env's changesets.
func StreamName(env string) string { return "PENNON_ENV_" + env }

// LogSubject is the subject changesets are committed to (with an expected
// last sequence). Sidecars must never subscribe to it: a plain subscriber also
// sees messages JetStream rejected.
func LogSubject(env string) string { return "pennon." + env + ".log" }

// LiveSubject is where the stream republishes committed changesets, with
// Nats-Sequence and Nats-Last-Sequence headers. Sidecars subscribe here.
func LiveSubject(env string) string { return "pennon." + env + ".live" }

// HeartbeatSubject carries Heartbeats for env.
func HeartbeatSubject(env string) string { return "pennon." + env + ".heartbeat" }

// SidecarSubject carries SidecarReports for env.
func SidecarSubject(env string) string { return "pennon." + env + ".sidecars" }

// LoadChangeset is the changeset that loads every flag of doc, with its
// flag-set metadata and $evaluators, into an environment that has none of
// them yet (base version 0 for each flag).
func LoadChangeset(env string, doc *Document, author, reason string) *Changeset {
	var parts struct {
		Metadata   map[string]any             `json:"metadata"`
		Evaluators map[string]json.RawMessage `json:"$evaluators"`
	}
	_ = json.Unmarshal(doc.Canonical(), &parts) // canonical JSON always decodes
	cs := &Changeset{Env: env, Author: author, Reason: reason, Metadata: parts.Metadata, Evaluators: parts.Evaluators}
	for _, k := range doc.FlagKeys() {
		cs.Changes = append(cs.Changes, Change{Flag: k, Op: OpPut, Definition: doc.FlagJSON(k)})
	}
	return cs
}

// SigningBytes is what a snapshot's signature covers. Hash covers Document,
// so the document itself is not repeated; FlagVersions is control-plane
// bookkeeping for conflict checks and is not served, so it is not signed.
func (r *SnapshotRecord) SigningBytes() []byte {
	return []byte("snapshot\x00" + r.Env + "\x00" + strconv.FormatUint(r.Version, 10) + "\x00" + r.Hash + "\x00" + r.Time.UTC().Format(time.RFC3339Nano))
}
