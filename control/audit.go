package control

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
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

// AuditEntry is one audited event. Each entry holds the hash of the
// previous one, so editing or deleting any entry breaks the chain at a
// place Verify can name; each is also signed by the control plane, so a
// chain rebuilt with valid hashes by someone who can write the audit stream
// (but does not hold the signing key) fails too.
type AuditEntry struct {
	Seq      uint64         `json:"seq"`
	Time     time.Time      `json:"time"`
	Actor    string         `json:"actor"` // token name (id); never a secret
	Action   string         `json:"action"`
	Env      string         `json:"env,omitempty"`
	Target   string         `json:"target,omitempty"`
	Outcome  string         `json:"outcome"`
	Details  map[string]any `json:"details,omitempty"`
	PrevHash string         `json:"prevHash"`
	Hash     string         `json:"hash"`
	// Signature is sign.PurposeAudit over "entry\x00" + Hash. Hash covers
	// everything else (Seq and PrevHash included), so a signed entry is only
	// valid at its own place in its own chain.
	Signature string `json:"signature,omitempty"`
}

// Placeholder actions Entries returns for sequences it cannot show.
const (
	actionMissing    = "<missing>"
	actionUnreadable = "<unreadable>"
)

// genesis is the PrevHash of the first entry.
var genesis = hex.EncodeToString(make([]byte, 32))

// entryHash hashes an entry's content (everything but Hash and Signature).
func entryHash(e AuditEntry) string {
	e.Hash, e.Signature = "", ""
	b, _ := json.Marshal(e)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func entrySigningBytes(hash string) []byte { return []byte("entry\x00" + hash) }

// AuditCheckpoint is the control plane's signed statement "the audit chain
// had entry Seq with hash Hash at Time". It is written to the control
// plane's data dir after every append, a place the writer of the audit
// stream cannot reach: deleting the chain's tail (or rebuilding the stream
// shorter) leaves a checkpoint that names an entry the chain no longer has.
type AuditCheckpoint struct {
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Signature string    `json:"signature"`
}

func (c *AuditCheckpoint) signingBytes() []byte {
	return []byte("checkpoint\x00" + strconv.FormatUint(c.Seq, 10) + "\x00" + c.Hash + "\x00" + c.Time.UTC().Format(time.RFC3339Nano))
}

// ChangesetAnchor is a committed changeset exactly as stored (its bytes
// and signature): its AuditHead is the audit tail when it was committed.
// Changesets live in the environment streams and are signed, so they anchor
// the audit chain from outside the audit stream.
type ChangesetAnchor struct {
	Env       string `json:"env"`
	Version   uint64 `json:"version"`
	Data      []byte `json:"data"` // base64 in JSON: the signed bytes, untouched
	Signature string `json:"signature,omitempty"`
}

// AuditAnchors is everything outside the audit stream that pins the chain.
// `pennon audit export` writes it as the first line of the export, so an
// export verifies offline.
type AuditAnchors struct {
	// Keys are the public keys the control plane trusts (informational: a
	// verifier should pin its own copy with --trust-key).
	Keys       []string         `json:"keys,omitempty"`
	Checkpoint *AuditCheckpoint `json:"checkpoint,omitempty"`
	// CheckpointError is set when the checkpoint file exists but cannot be
	// read: reported by verify, never silently treated as "no checkpoint".
	CheckpointError string            `json:"checkpointError,omitempty"`
	Changesets      []ChangesetAnchor `json:"changesets,omitempty"`
}

// AuditLogOptions configure an AuditLog.
type AuditLogOptions struct {
	Replicas int
	// Signer signs entries and checkpoints. Required.
	Signer *sign.Key
	// Trust verifies the checkpoint found at open (current and retired
	// keys, so a key rotation does not look like a forged checkpoint);
	// nil trusts the signer only.
	Trust *sign.Trust
	// CheckpointPath is the file the signed checkpoint is written to ("" :
	// none; changeset anchors remain).
	CheckpointPath string
	Logger         *zap.Logger
}

// AuditLog appends to the audit stream. Appends use JetStream's
// expected-last-sequence so several control-plane replicas extend one chain.
type AuditLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	o      AuditLogOptions
	log    *zap.Logger

	mu         sync.Mutex
	tail       config.AuditAnchor // last entry this process appended or read
	tailKnown  bool
	checkpoint *AuditCheckpoint // last checkpoint written (or loaded at open)
	contradict bool             // the checkpoint is evidence against the chain: never extended again (logged once)
	tailLost   bool             // "tail unreadable" logged already
	// While batching (start-up reconciliation) the checkpoint is written
	// once at the end instead of after every append: one fsync, not one per
	// recovered entry.
	batching  bool
	batchPrev *config.AuditAnchor
	batchLast AuditEntry
}

// CheckpointFile is the checkpoint's file name in the control plane's data dir.
const CheckpointFile = "audit-anchor.json"

// OpenAuditLog opens (or creates) the audit stream.
func OpenAuditLog(ctx context.Context, js jetstream.JetStream, o AuditLogOptions) (*AuditLog, error) {
	if o.Signer == nil {
		return nil, errors.New("audit: a signing key is required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: config.AuditStream, Subjects: []string{config.AuditSubject},
		Storage: jetstream.FileStorage, Replicas: max(o.Replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	a := &AuditLog{js: js, stream: st, o: o, log: o.Logger}
	cp, err := a.LoadCheckpoint()
	switch {
	case err != nil:
		// Kept (not overwritten) so the evidence survives; Verify reports it.
		a.log.Error("audit checkpoint unreadable: it is not extended until an operator investigates and removes it", zap.String("path", o.CheckpointPath), zap.Error(err))
		a.contradict = true
	case cp != nil && trustFor(o.Signer, o.Trust).Verify(sign.PurposeAudit, cp.signingBytes(), cp.Signature) != nil:
		a.log.Error("audit checkpoint not signed by a trusted key: it is kept for audit verify and not extended", zap.String("path", o.CheckpointPath), zap.Uint64("seq", cp.Seq))
		a.contradict = true // and a.checkpoint stays nil: nothing is anchored to it
	default:
		a.checkpoint = cp
	}
	return a, nil
}

// LoadCheckpoint reads the checkpoint file (nil when there is none).
func (a *AuditLog) LoadCheckpoint() (*AuditCheckpoint, error) {
	if a.o.CheckpointPath == "" {
		return nil, nil
	}
	data, err := os.ReadFile(a.o.CheckpointPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cp AuditCheckpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return nil, fmt.Errorf("%s: %w", a.o.CheckpointPath, err)
	}
	return &cp, nil
}

// Tail is what a changeset records as its AuditHead: the last entry of the
// chain (Seq 0 for an empty chain) — unless the chain is known to have lost
// the checkpointed entry (shorter than the checkpoint, a different entry
// there, or a contradiction found on append). Then the checkpoint is
// anchored instead: a signed changeset must never vouch for a chain that
// was cut or rewritten.
func (a *AuditLog) Tail(ctx context.Context) (config.AuditAnchor, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	info, err := a.stream.Info(ctx)
	if err != nil {
		return config.AuditAnchor{}, err
	}
	last := info.State.LastSeq
	tail := config.AuditAnchor{Hash: genesis}
	if last > 0 {
		hash, err := a.hashAt(ctx, last)
		if err != nil {
			return config.AuditAnchor{}, err
		}
		tail = config.AuditAnchor{Seq: last, Hash: hash}
	}
	if cp := a.checkpoint; cp != nil && (a.contradict || cp.Seq > last || (cp.Seq == last && cp.Hash != tail.Hash)) {
		return config.AuditAnchor{Seq: cp.Seq, Hash: cp.Hash}, nil
	}
	return tail, nil
}

// hashAt is entry seq's hash, from memory when this process wrote or read
// it last, else from the checkpoint, else from the stream. Reading from
// memory first means a tail swapped in the stream behind our back does not
// become what we link to. Caller holds a.mu.
func (a *AuditLog) hashAt(ctx context.Context, seq uint64) (string, error) {
	if a.tailKnown && a.tail.Seq == seq {
		return a.tail.Hash, nil
	}
	e, err := a.get(ctx, seq)
	if err == nil {
		a.tail, a.tailKnown = config.AuditAnchor{Seq: seq, Hash: e.Hash}, true
		return e.Hash, nil
	}
	if a.checkpoint != nil && a.checkpoint.Seq == seq && !a.contradict {
		return a.checkpoint.Hash, nil // the tail entry was deleted: keep linking to what it was
	}
	var se *json.SyntaxError
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.As(err, &se) {
		// The tail was deleted or replaced and nothing remembers its hash.
		// Stopping here would let whoever deleted one entry stop all
		// auditing (and, through AuditHead, all commits); instead the chain
		// goes on with a link verify reports next to the deletion.
		if !a.tailLost {
			a.log.Error("audit chain tail unreadable: appending with an unknown link (audit verify reports it)", zap.Uint64("seq", seq), zap.Error(err))
			a.tailLost = true
		}
		return unknownLink(seq), nil
	}
	return "", fmt.Errorf("audit: read entry %d (the chain's tail): %w", seq, err)
}

// unknownLink is the PrevHash of an entry appended after an unreadable tail.
func unknownLink(seq uint64) string {
	return "unknown: entry " + strconv.FormatUint(seq, 10) + " was unreadable"
}

// Append adds an entry, linking it to the current tail, signs it and
// writes a new checkpoint.
func (a *AuditLog) Append(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 0; attempt < 20; attempt++ {
		// The tail this process wrote last is the usual expected-last
		// sequence: publish against it directly (one round trip); only a
		// lost race (another replica appended) costs a stream lookup.
		var last uint64
		var err error
		if a.tailKnown {
			last, e.PrevHash = a.tail.Seq, a.tail.Hash
		} else {
			info, err := a.stream.Info(ctx)
			if err != nil {
				return e, err
			}
			last, e.PrevHash = info.State.LastSeq, genesis
			if last > 0 {
				if e.PrevHash, err = a.hashAt(ctx, last); err != nil {
					return e, err
				}
			}
		}
		e.Seq = last + 1
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		e.Hash = entryHash(e)
		e.Signature = a.o.Signer.Sign(sign.PurposeAudit, entrySigningBytes(e.Hash))
		b, _ := json.Marshal(e)
		_, err = a.js.Publish(ctx, config.AuditSubject, b, jetstream.WithExpectLastSequence(last))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			a.tailKnown = false
			continue // another replica appended first
		}
		if err != nil {
			return e, err
		}
		prev := config.AuditAnchor{Seq: last, Hash: e.PrevHash}
		a.tail, a.tailKnown = config.AuditAnchor{Seq: e.Seq, Hash: e.Hash}, true
		if a.batching {
			if a.batchPrev == nil {
				a.batchPrev = &prev
			}
			a.batchLast = e
			return e, nil
		}
		a.writeCheckpoint(ctx, prev, e)
		return e, nil
	}
	return e, errors.New("audit: too many concurrent appends")
}

// batch defers checkpoints until end is called; end writes one for the
// last entry appended meanwhile.
func (a *AuditLog) batch() (end func(ctx context.Context)) {
	a.mu.Lock()
	a.batching = true
	a.mu.Unlock()
	return func(ctx context.Context) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.batching = false
		if a.batchPrev != nil {
			a.writeCheckpoint(ctx, *a.batchPrev, a.batchLast)
		}
		a.batchPrev = nil
	}
}

// writeCheckpoint moves the checkpoint to e, but only forward along the
// same chain: if the chain no longer contains the checkpointed entry (tail
// deleted, stream rebuilt), the old checkpoint is kept as evidence and the
// contradiction logged once. Caller holds a.mu.
func (a *AuditLog) writeCheckpoint(ctx context.Context, prev config.AuditAnchor, e AuditEntry) {
	if a.o.CheckpointPath == "" || a.contradict {
		return
	}
	if old := a.checkpoint; old != nil {
		consistent := false
		switch {
		case old.Seq == prev.Seq:
			consistent = old.Hash == prev.Hash
		case old.Seq < prev.Seq:
			got, err := a.get(ctx, old.Seq)
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return // cannot tell now; the next append tries again
			}
			consistent = err == nil && got.Hash == old.Hash
		}
		if !consistent {
			a.log.Error("audit chain no longer contains the checkpointed entry: the audit stream was rewritten or truncated; the checkpoint is kept as evidence (run pennon audit verify)",
				zap.Uint64("checkpointSeq", old.Seq), zap.Uint64("chainTail", e.Seq))
			a.contradict = true
			return
		}
	}
	cp := &AuditCheckpoint{Seq: e.Seq, Hash: e.Hash, Time: time.Now().UTC()}
	cp.Signature = a.o.Signer.Sign(sign.PurposeAudit, cp.signingBytes())
	data, _ := json.MarshalIndent(cp, "", "  ")
	if err := sign.WriteFileAtomic(a.o.CheckpointPath, append(data, '\n'), 0o600); err != nil {
		a.log.Warn("audit checkpoint not written", zap.String("path", a.o.CheckpointPath), zap.Error(err))
		return
	}
	a.checkpoint = cp
}

func (a *AuditLog) get(ctx context.Context, seq uint64) (AuditEntry, error) {
	var e AuditEntry
	m, err := a.stream.GetMsg(ctx, seq)
	if err != nil {
		return e, err
	}
	err = json.Unmarshal(m.Data, &e)
	return e, err
}

// Entries returns up to limit entries after sequence `after`. A deleted
// entry is returned as a placeholder with Action "<missing>", one that does
// not decode as "<unreadable>", so Verify can name them.
func (a *AuditLog) Entries(ctx context.Context, after uint64, limit int) ([]AuditEntry, error) {
	info, err := a.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1 << 30
	}
	out := []AuditEntry{}
	next := after + 1
	full := func() bool { return len(out) >= limit }
	err = a.scan(ctx, max(next, info.State.FirstSeq), info.State.LastSeq, func(seq uint64, data []byte) bool {
		for ; next < seq && !full(); next++ {
			out = append(out, AuditEntry{Seq: next, Action: actionMissing})
		}
		if full() {
			return false
		}
		var e AuditEntry
		if json.Unmarshal(data, &e) != nil {
			e = AuditEntry{Seq: seq, Action: actionUnreadable}
		}
		out = append(out, e)
		next = seq + 1
		return !full()
	})
	if err != nil {
		return nil, err
	}
	for ; next <= info.State.LastSeq && !full(); next++ {
		out = append(out, AuditEntry{Seq: next, Action: actionMissing})
	}
	return out, nil
}

// scan calls fn for each stored message with from <= sequence <= to, in
// order, until fn returns false. It reads through an ordered consumer (one
// round trip per batch), not one GetMsg per entry: verify and the start-up
// reconciliation read the whole chain.
func (a *AuditLog) scan(ctx context.Context, from, to uint64, fn func(seq uint64, data []byte) bool) error {
	if from == 0 {
		from = 1
	}
	if from > to {
		return nil
	}
	cons, err := a.js.OrderedConsumer(ctx, config.AuditStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return fmt.Errorf("audit: read chain: %w", err)
	}
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return fmt.Errorf("audit: read chain: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("audit: read chain: %w", err)
			}
			seq := md.Sequence.Stream
			if seq > to || !fn(seq, m.Data()) {
				return nil
			}
			if seq == to {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("audit: read chain: %w", err)
		}
		if n == 0 {
			return nil // the rest was deleted
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// VerifyResult is the outcome of checking a chain.
type VerifyResult struct {
	OK      bool `json:"ok"`
	Entries int  `json:"entries"`
	// Anchors is how many anchors (checkpoint, changesets) were checked.
	Anchors  int    `json:"anchors"`
	FirstBad uint64 `json:"firstBad,omitempty"`
	Problem  string `json:"problem,omitempty"`
	// Problems lists every problem found (at most maxProblems), by entry.
	Problems []AuditProblem `json:"problems,omitempty"`
	// Notes are facts that are not failures (e.g. an unsigned anchor).
	Notes []string `json:"notes,omitempty"`
}

// AuditProblem is one thing wrong with the chain, located at an entry.
type AuditProblem struct {
	Seq     uint64 `json:"seq"`
	Problem string `json:"problem"`
}

const maxProblems = 50

// VerifyEntries checks a chain offline: sequence without gaps, each entry's
// hash over its content, each link to the previous hash, each entry's
// signature (against trust), and that the chain still contains every
// anchored entry (checkpoint and changesets' AuditHead). trust nil skips
// signatures and says so in Notes.
func VerifyEntries(entries []AuditEntry, anchors *AuditAnchors, trust *sign.Trust) VerifyResult {
	res := VerifyResult{Entries: len(entries)}
	add := func(seq uint64, format string, args ...any) {
		if len(res.Problems) < maxProblems {
			res.Problems = append(res.Problems, AuditProblem{Seq: seq, Problem: fmt.Sprintf(format, args...)})
		}
	}
	if trust.Len() == 0 {
		res.Notes = append(res.Notes, "signatures not checked: no trusted key given (a chain rebuilt with valid hashes would pass)")
	}
	prev := genesis
	for i, e := range entries {
		want := uint64(i + 1)
		switch {
		case e.Action == actionMissing:
			add(want, "entry %d was deleted", want)
		case e.Action == actionUnreadable:
			add(want, "entry %d is not a valid audit entry (replaced by other data)", want)
		case e.Seq != want:
			add(want, "entry %d is missing or out of order (found sequence %d in its place)", want, e.Seq)
		case entryHash(e) != e.Hash:
			add(want, "entry %d was edited: its content does not match its hash", want)
		case e.PrevHash != prev:
			add(want, "entry %d does not link to entry %d: the chain was broken before it", want, want-1)
		case trust.Len() > 0:
			if err := trust.Verify(sign.PurposeAudit, entrySigningBytes(e.Hash), e.Signature); err != nil {
				add(want, "entry %d is not signed by the control plane (%v): it was rewritten, or the chain rebuilt, by someone without the signing key", want, err)
			}
		}
		prev = e.Hash
	}
	if anchors != nil {
		check := func(source string, a config.AuditAnchor) {
			res.Anchors++
			n := uint64(len(entries))
			switch {
			case a.Seq == 0:
			case a.Seq > n:
				add(n+1, "the chain ends at entry %d but %s anchors entry %d: entries %d..%d were removed (truncated tail)", n, source, a.Seq, n+1, a.Seq)
			case entries[a.Seq-1].Hash != a.Hash:
				add(a.Seq, "entry %d is not the entry %s anchors: the chain was rewritten at or before entry %d", a.Seq, source, a.Seq)
			}
		}
		if anchors.CheckpointError != "" {
			add(0, "the checkpoint file is unreadable (%s): the anchor file was altered or damaged", anchors.CheckpointError)
		}
		if cp := anchors.Checkpoint; cp != nil {
			if trust.Len() > 0 {
				if err := trust.Verify(sign.PurposeAudit, cp.signingBytes(), cp.Signature); err != nil {
					add(cp.Seq, "the checkpoint naming entry %d is not signed by the control plane (%v): the anchor file was altered", cp.Seq, err)
				}
			}
			check(fmt.Sprintf("the checkpoint of %s", cp.Time.UTC().Format(time.RFC3339)), config.AuditAnchor{Seq: cp.Seq, Hash: cp.Hash})
		}
		for _, ca := range anchors.Changesets {
			var cs config.Changeset
			if err := json.Unmarshal(ca.Data, &cs); err != nil || cs.AuditHead == nil {
				res.Notes = append(res.Notes, fmt.Sprintf("changeset %s@%d carries no readable audit anchor", ca.Env, ca.Version))
				continue
			}
			source := fmt.Sprintf("changeset %s@%d", ca.Env, ca.Version)
			switch {
			case ca.Signature == "":
				res.Notes = append(res.Notes, source+" is unsigned: its anchor is checked but proves nothing on its own")
			case trust.Len() > 0:
				if err := trust.Verify(sign.PurposeChangeset, ca.Data, ca.Signature); err != nil {
					res.Notes = append(res.Notes, fmt.Sprintf("%s has an invalid signature (%v): its anchor is ignored", source, err))
					continue
				}
			}
			check(source, *cs.AuditHead)
		}
	}
	if len(res.Problems) == 0 {
		res.OK = true
		return res
	}
	sort.SliceStable(res.Problems, func(i, j int) bool { return res.Problems[i].Seq < res.Problems[j].Seq })
	res.FirstBad, res.Problem = res.Problems[0].Seq, res.Problems[0].Problem
	return res
}
