package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
)

// AuditEntry is one audited event. Each entry holds the hash of the
// previous one, so editing or deleting any entry breaks the chain at a
// place Verify can name.
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
}

// genesis is the PrevHash of the first entry.
var genesis = hex.EncodeToString(make([]byte, 32))

// entryHash hashes an entry's content (everything but Hash itself).
func entryHash(e AuditEntry) string {
	e.Hash = ""
	b, _ := json.Marshal(e)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AuditLog appends to the audit stream. Appends use JetStream's
// expected-last-sequence so several control-plane replicas extend one chain.
type AuditLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	mu     sync.Mutex
}

// OpenAuditLog opens (or creates) the audit stream.
func OpenAuditLog(ctx context.Context, js jetstream.JetStream, replicas int) (*AuditLog, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: config.AuditStream, Subjects: []string{config.AuditSubject},
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	return &AuditLog{js: js, stream: st}, nil
}

// Append adds an entry, linking it to the current tail.
func (a *AuditLog) Append(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 0; attempt < 20; attempt++ {
		info, err := a.stream.Info(ctx)
		if err != nil {
			return e, err
		}
		last := info.State.LastSeq
		e.PrevHash = genesis
		if last > 0 {
			prev, err := a.get(ctx, last)
			if err != nil {
				return e, err
			}
			e.PrevHash = prev.Hash
		}
		e.Seq = last + 1
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		e.Hash = entryHash(e)
		b, _ := json.Marshal(e)
		_, err = a.js.Publish(ctx, config.AuditSubject, b, jetstream.WithExpectLastSequence(last))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // another replica appended first
		}
		return e, err
	}
	return e, errors.New("audit: too many concurrent appends")
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
// entry is returned as a placeholder with Action "<missing>" so Verify can
// name it.
func (a *AuditLog) Entries(ctx context.Context, after uint64, limit int) ([]AuditEntry, error) {
	info, err := a.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1 << 30
	}
	out := []AuditEntry{}
	for seq := max(after+1, info.State.FirstSeq); seq <= info.State.LastSeq && len(out) < limit; seq++ {
		e, err := a.get(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			out = append(out, AuditEntry{Seq: seq, Action: "<missing>"})
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	// Entries deleted from the head of the stream move FirstSeq: report them too.
	if after == 0 && info.State.FirstSeq > 1 {
		missing := make([]AuditEntry, 0, info.State.FirstSeq-1)
		for seq := uint64(1); seq < info.State.FirstSeq; seq++ {
			missing = append(missing, AuditEntry{Seq: seq, Action: "<missing>"})
		}
		out = append(missing, out...)
	}
	return out, nil
}

// VerifyResult is the outcome of checking a chain.
type VerifyResult struct {
	OK       bool   `json:"ok"`
	Entries  int    `json:"entries"`
	FirstBad uint64 `json:"firstBad,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

// VerifyEntries checks a chain offline: sequence without gaps, each entry's
// hash over its content, each link to the previous hash.
func VerifyEntries(entries []AuditEntry) VerifyResult {
	prev := genesis
	for i, e := range entries {
		want := uint64(i + 1)
		bad := func(p string) VerifyResult {
			return VerifyResult{Entries: len(entries), FirstBad: want, Problem: p}
		}
		switch {
		case e.Action == "<missing>":
			return bad(fmt.Sprintf("entry %d was deleted", want))
		case e.Seq != want:
			return bad(fmt.Sprintf("entry %d is missing or out of order (found sequence %d)", want, e.Seq))
		case entryHash(e) != e.Hash:
			return bad(fmt.Sprintf("entry %d was edited: its content does not match its hash", want))
		case e.PrevHash != prev:
			return bad(fmt.Sprintf("entry %d does not link to entry %d: the chain was broken before it", want, want-1))
		}
		prev = e.Hash
	}
	return VerifyResult{OK: true, Entries: len(entries)}
}

// Verify reads the whole stream and checks it.
func (a *AuditLog) Verify(ctx context.Context) (VerifyResult, error) {
	entries, err := a.Entries(ctx, 0, 0)
	if err != nil {
		return VerifyResult{}, err
	}
	return VerifyEntries(entries), nil
}
