package control

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
)

// Reconcile runs the start-up catch-up again. New runs it before serving;
// call it after committing through the store directly (e.g. `pennon dev`
// loading its example flags), so those versions get their audit entries
// and emergency index now rather than at the next start.
func (s *Server) Reconcile(ctx context.Context) error { return s.catchUp(ctx) }

// catchUp runs once at start, before the API serves. It reads the audit
// chain once and then:
//
//   - audit reconciliation: a commit and its audit entry are two writes to
//     two streams, so a crash (kill -9) between them leaves a committed
//     changeset with no entry. Every version of every environment without
//     an entry gets one now, outcome "recovered", built from the changeset
//     itself (author, time, reason). Writes that bypassed the control plane
//     are caught the same way; a foreign message (forged, deleted) is
//     audited once with outcome "foreign".
//   - emergency index: every emergency the chain records (commit entries
//     carry details.emergency) and every recovered one is indexed if the
//     index lacks it — a lost index write, or a lost bucket, is rebuilt.
//     Only versions the index lacks are read back, and only the signed
//     changeset (not the audit entry) decides that a version is an
//     emergency.
//
// Changesets are read only for versions that need it, so a restart costs
// one pass over the chain, not one over every environment's history.
// Two replicas starting at once may both recover the same version; the
// duplicate entry is harmless (both say "recovered" for the same version).
func (s *Server) catchUp(ctx context.Context) error {
	start := time.Now()
	chain, err := s.readChain(ctx)
	// JetStream can refuse for a moment what it will answer a moment later
	// (no responders while a replica catches up, a leader election): a
	// replica restarting then must not fail to start. Anything else, or a
	// refusal that lasts, still stops the start-up.
	for attempt := 1; err != nil && storeUnavailable(err) && ctx.Err() == nil && attempt <= catchUpRetries; attempt++ {
		s.log.Warn("audit reconciliation: JetStream not answering; retrying", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
		}
		chain, err = s.readChain(ctx)
	}
	if err != nil {
		return fmt.Errorf("audit reconciliation: read the chain: %w", err)
	}
	envs, err := s.o.Store.Envs(ctx)
	if err != nil {
		return err
	}
	recovered, indexed := 0, 0
	end := s.audit.batch()
	defer end(ctx)
	for _, env := range envs {
		head, err := s.o.Store.Head(ctx, env.Name)
		if err != nil {
			return fmt.Errorf("env %s: %w", env.Name, err)
		}
		have, err := s.indexedEmergencies(ctx, env.Name)
		if err != nil {
			return fmt.Errorf("env %s: emergency index: %w", env.Name, err)
		}
		audited := chain.audited[env.Name]
		missing := 0
		for v := uint64(1); v <= head.Version; v++ {
			if !audited[v] {
				missing++
			}
		}
		if missing > 0 {
			s.log.Warn("committed changesets without audit entries: recording them", zap.String("env", env.Name), zap.Int("missing", missing))
		}
		for v := uint64(1); v <= head.Version; v++ {
			needAudit := !audited[v]
			needIndex := chain.emergencies[env.Name][v] && !have[v]
			if !needAudit && !needIndex {
				continue
			}
			cs, err := s.o.Store.Changeset(ctx, env.Name, v)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.log.Warn("changeset unreadable; not reconciled", zap.String("env", env.Name), zap.Uint64("version", v), zap.Error(err))
				continue
			}
			if cs.Foreign != "" {
				// Not a changeset of the control plane (forged, unsigned,
				// deleted): nothing was committed, but its presence is
				// audited once.
				if needAudit {
					if _, err := s.audit.Append(ctx, AuditEntry{Actor: "unknown", Action: "foreign-changeset", Env: env.Name, Target: strconv.FormatUint(v, 10), Outcome: "foreign",
						Details: map[string]any{"version": v, "why": cs.Foreign, "note": "the message at this version is not a valid changeset of the control plane and was skipped (see pennon doctor)"}}); err != nil {
						return fmt.Errorf("env %s: audit entry for foreign version %d: %w", env.Name, v, err)
					}
				}
				continue
			}
			if cs.Emergency && !have[v] {
				if err := s.indexEmergency(ctx, cs, ""); err != nil {
					return fmt.Errorf("env %s: index emergency %d: %w", env.Name, v, err)
				}
				indexed++
			}
			if needAudit {
				if _, err := s.audit.Append(ctx, recoveredEntry(cs)); err != nil {
					return fmt.Errorf("env %s: audit entry for version %d: %w", env.Name, v, err)
				}
				recovered++
				if recovered%100 == 0 {
					s.log.Info("audit reconciliation progress", zap.String("env", env.Name), zap.Uint64("version", v), zap.Int("recovered", recovered))
				}
			}
		}
	}
	s.log.Info("audit reconciliation done", zap.Int("entriesScanned", chain.entries), zap.Int("envs", len(envs)),
		zap.Int("recovered", recovered), zap.Int("emergenciesIndexed", indexed), zap.Duration("took", time.Since(start)))
	return nil
}

// committedOutcomes are the outcomes of entries that account for a version
// (details.version is the version): committed, or found foreign.
var committedOutcomes = map[string]bool{"committed": true, "applied": true, "recovered": true, "foreign": true}

// catchUpRetries bounds catchUp's retries of a transient JetStream refusal:
// 250 ms, 500 ms, … 2.5 s apart, about 14 s in all.
const catchUpRetries = 10

// chainSummary is what the start-up pass needs from the chain.
type chainSummary struct {
	entries     int
	audited     map[string]map[uint64]bool // env → versions with an entry
	emergencies map[string]map[uint64]bool // env → versions recorded as emergencies
}

// readChain reads the whole chain once.
func (s *Server) readChain(ctx context.Context) (*chainSummary, error) {
	info, err := s.audit.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := &chainSummary{audited: map[string]map[uint64]bool{}, emergencies: map[string]map[uint64]bool{}}
	add := func(m map[string]map[uint64]bool, env string, v uint64) {
		if m[env] == nil {
			m[env] = map[uint64]bool{}
		}
		m[env][v] = true
	}
	err = s.audit.scan(ctx, info.State.FirstSeq, info.State.LastSeq, func(_ uint64, data []byte) bool {
		out.entries++
		if out.entries%50000 == 0 {
			s.log.Info("audit reconciliation: reading the chain", zap.Int("entries", out.entries), zap.Uint64("of", info.State.LastSeq))
		}
		var e struct {
			Env     string `json:"env"`
			Outcome string `json:"outcome"`
			Details struct {
				Version   json.Number `json:"version"`
				Emergency bool        `json:"emergency"`
			} `json:"details"`
		}
		if json.Unmarshal(data, &e) != nil || e.Env == "" || !committedOutcomes[e.Outcome] {
			return true
		}
		v, err := e.Details.Version.Int64()
		if err != nil || v <= 0 {
			return true
		}
		add(out.audited, e.Env, uint64(v))
		if e.Details.Emergency {
			add(out.emergencies, e.Env, uint64(v))
		}
		return true
	})
	return out, err
}

// recoveredEntry is the audit entry for a changeset that had none.
func recoveredEntry(cs *config.Changeset) AuditEntry {
	action := "commit"
	switch {
	case cs.ChangeRequest != "":
		action = "approve"
	case cs.RollbackTo > 0:
		action = "rollback"
	case cs.PromotedFrom != "":
		action = "promote"
	}
	details := map[string]any{"version": cs.Version, "reason": cs.Reason, "committedAt": cs.Time,
		"note": "committed without an audit entry (crash between commit and audit, or a write that bypassed the API); recorded at start-up from the changeset"}
	if cs.Emergency {
		details["emergency"] = true
	}
	if cs.ChangeRequest != "" {
		details["changeRequest"] = cs.ChangeRequest
	}
	if cs.RollbackTo > 0 {
		details["rollbackTo"] = cs.RollbackTo
	}
	if cs.PromotedFrom != "" {
		details["promotedFrom"] = cs.PromotedFrom
	}
	return AuditEntry{Actor: cs.Author, Action: action, Env: cs.Env, Target: flagsOf(cs.Changes), Outcome: "recovered", Details: details}
}
