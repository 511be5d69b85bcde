package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

// record appends an audit entry. Auditing must not silently fail: a failed
// append is logged at error level (the start-up reconciliation restores
// entries for commits; other events are only in the log then). The entry
// outlives the request: a client that hangs up right after its commit (or
// its denial) must not be able to skip the audit by cancelling.
func (s *Server) record(ctx context.Context, p principal, action, env, target, outcome string, details map[string]any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := s.audit.Append(ctx, AuditEntry{Actor: p.actor(), Action: action, Env: env, Target: target, Outcome: outcome, Details: details}); err != nil {
		s.log.Error("audit entry not written", zap.String("action", action), zap.String("env", env), zap.Error(err))
	}
}

// deny audits a refusal (403) and returns it. Route-level role checks and
// the checks inside handlers (emergency, rollback, promote, reviews,
// change-request decisions) all go through here, so every 403 is audited
// the same way. Denials are rate-limited per token: a script hammering a
// forbidden route writes at most denyLimit entries per denyWindow, then one
// summary entry with the suppressed count, so it cannot flood the chain.
func (s *Server) deny(ctx context.Context, p principal, action, env, target string, details map[string]any, ae *apiError) error {
	id, actor := "", p.actor()
	if p.tok != nil {
		id = p.tok.ID
	}
	write, summary := s.denials.admit(id, actor, action, s.denials.clock())
	if summary != nil {
		s.recordSuppressed(ctx, summary)
	}
	if !write {
		s.deniesSuppressed.Inc()
		return ae
	}
	if details == nil {
		details = map[string]any{}
	}
	details["status"] = ae.Status
	details["message"] = ae.Message
	s.log.Info("access denied", zap.String("token", id), zap.String("action", action), zap.String("env", env), zap.String("target", target), zap.String("why", ae.Message))
	s.record(ctx, p, action, env, target, "denied", details)
	return ae
}

// auditTimeout bounds one audit append detached from its request.
const auditTimeout = 10 * time.Second

func (s *Server) recordSuppressed(ctx context.Context, w *denyWindow) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	s.log.Warn("denied requests not audited one by one (rate limit)", zap.String("token", w.id), zap.Int("suppressed", w.suppressed), zap.Time("from", w.start))
	e := AuditEntry{Actor: w.actor, Action: "deny.suppressed", Target: w.id, Outcome: "suppressed", Details: map[string]any{
		"token": w.actor, "suppressed": w.suppressed, "written": w.written,
		"from": w.start.UTC(), "to": w.last.UTC(), "actions": w.actions,
		"note": fmt.Sprintf("more than %d denials in %s from this token: the rest are counted here", s.denials.limit, s.denials.window),
	}}
	if _, err := s.audit.Append(ctx, e); err != nil {
		s.log.Error("audit entry not written", zap.String("action", e.Action), zap.Error(err))
	}
}

// flushDenials writes the summaries of rate-limit windows that ended, so a
// burst that stops is still accounted for without waiting for its next
// denial.
func (s *Server) flushDenials(ctx context.Context) {
	t := time.NewTicker(s.denials.window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, w := range s.denials.expired(s.denials.clock()) {
				s.recordSuppressed(ctx, w)
			}
		}
	}
}

// denyLimiter counts denials per token in fixed windows.
type denyLimiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	now    func() time.Time
	open   map[string]*denyWindow // token id → current window
}

type denyWindow struct {
	id, actor           string
	start, last         time.Time
	written, suppressed int
	actions             map[string]int // suppressed per action
}

// clock is the limiter's time source (replaceable in tests).
func (l *denyLimiter) clock() time.Time {
	l.mu.Lock()
	now := l.now
	l.mu.Unlock()
	return now()
}

func newDenyLimiter(limit int, window time.Duration) *denyLimiter {
	return &denyLimiter{limit: limit, window: window, now: time.Now, open: map[string]*denyWindow{}}
}

// admit says whether this denial gets its own audit entry; summary, when
// not nil, is the token's previous window, which ended with suppressed
// denials and must be recorded first.
func (l *denyLimiter) admit(id, actor, action string, now time.Time) (write bool, summary *denyWindow) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.open[id]
	if w != nil && now.Sub(w.start) >= l.window {
		if w.suppressed > 0 {
			summary = w
		}
		w = nil
	}
	if w == nil {
		w = &denyWindow{id: id, actor: actor, start: now, actions: map[string]int{}}
		l.open[id] = w
	}
	w.last = now
	if w.written < l.limit {
		w.written++
		return true, summary
	}
	w.suppressed++
	if len(w.actions) < 64 || w.actions[action] > 0 {
		w.actions[action]++
	}
	return false, summary
}

// expired removes ended windows and returns those with suppressed denials.
func (l *denyLimiter) expired(now time.Time) []*denyWindow {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*denyWindow
	for id, w := range l.open {
		if now.Sub(w.start) >= l.window {
			delete(l.open, id)
			if w.suppressed > 0 {
				out = append(out, w)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

// commitAnchored is the one way the API commits: it anchors the audit chain in the
// changeset (AuditHead, signed with it by the store) and indexes emergency
// changes. Every commit path (writes, approvals, rollbacks, promotions,
// emergencies) goes through here.
func (s *Server) commitAnchored(ctx context.Context, p principal, in *config.Changeset) (*config.Changeset, error) {
	head, err := s.audit.Tail(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit chain tail (anchored in every changeset): %w", err)
	}
	in.AuditHead = &head
	cs, err := s.o.Store.Commit(ctx, in)
	if err != nil {
		return nil, err
	}
	if cs.Emergency {
		authorID := ""
		if p.tok != nil {
			authorID = p.tok.ID
		}
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
		defer cancel()
		if err := s.indexEmergency(ictx, cs, authorID); err != nil {
			// The start-up scan indexes it if this process dies first.
			s.log.Error("emergency change not indexed", zap.String("env", cs.Env), zap.Uint64("version", cs.Version), zap.Error(err))
		}
	}
	s.notifyCommitted(ctx, cs)
	return cs, nil
}

// auditAnchors collects what pins the audit chain from outside its stream:
// the signed checkpoint in the data dir and, per environment, the newest
// changeset carrying an AuditHead (exact bytes and signature).
func (s *Server) auditAnchors(ctx context.Context) (*AuditAnchors, error) {
	out := &AuditAnchors{Changesets: []ChangesetAnchor{}}
	for _, k := range s.trust.Keys() {
		out.Keys = append(out.Keys, k.String())
	}
	sort.Strings(out.Keys)
	cp, err := s.audit.LoadCheckpoint()
	if err != nil {
		out.CheckpointError = err.Error()
	}
	out.Checkpoint = cp
	envs, err := s.o.Store.Envs(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range envs {
		st, err := s.o.JetStream.Stream(ctx, config.StreamName(e.Name))
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		// The newest anchored changeset is within a few versions of the head
		// (only commits that bypass the API lack one). A message whose
		// signature does not verify is passed over: a forged "newest
		// changeset" must not hide the real anchor below it.
		var fallback *ChangesetAnchor
		found := false
		for v, n := info.State.LastSeq, 0; v >= max(info.State.FirstSeq, 1) && n < 64 && !found; v, n = v-1, n+1 {
			m, err := st.GetMsg(ctx, v)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("env %s version %d: %w", e.Name, v, err)
			}
			if !hasAuditHead(m.Data) {
				continue
			}
			a := ChangesetAnchor{Env: e.Name, Version: v, Data: m.Data, Signature: m.Header.Get(config.SignatureHeader)}
			if s.trust.Verify(sign.PurposeChangeset, a.Data, a.Signature) == nil {
				out.Changesets = append(out.Changesets, a)
				found = true
			} else if fallback == nil {
				fallback = &a
			}
		}
		if !found && fallback != nil {
			out.Changesets = append(out.Changesets, *fallback) // verify notes why it proves nothing
		}
	}
	return out, nil
}

func hasAuditHead(data []byte) bool {
	var probe struct {
		AuditHead *config.AuditAnchor `json:"auditHead"`
	}
	return json.Unmarshal(data, &probe) == nil && probe.AuditHead != nil
}

// verifyAudit checks the chain in the stream against its anchors.
func (s *Server) verifyAudit(ctx context.Context) (VerifyResult, error) {
	anchors, err := s.auditAnchors(ctx)
	if err != nil {
		return VerifyResult{}, err
	}
	entries, err := s.audit.Entries(ctx, 0, 0)
	if err != nil {
		return VerifyResult{}, err
	}
	return VerifyEntries(entries, anchors, s.trust), nil
}

func (s *Server) auditAnchorsRoute(w http.ResponseWriter, r *http.Request, _ principal) error {
	a, err := s.auditAnchors(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, 200, a)
}

// trustFor is the trust set audit verification uses: the configured one, or
// the signer's own key.
func trustFor(signer *sign.Key, trust *sign.Trust) *sign.Trust {
	if trust.Len() > 0 {
		return trust
	}
	return sign.NewTrust(signer.Public())
}
