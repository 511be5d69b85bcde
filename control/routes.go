package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/console"
	"github.com/pennon-dev/pennon/evaluator"
)

func (s *Server) routes() {
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.o.Registry, promhttp.HandlerOpts{}))
	s.route("GET /healthz", "healthz", RoleNone, func(w http.ResponseWriter, r *http.Request, _ principal) error {
		return writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	s.route("GET /readyz", "readyz", RoleNone, func(w http.ResponseWriter, r *http.Request, _ principal) error {
		if _, err := s.o.Store.Envs(r.Context()); err != nil {
			return newErr(CodeUnavailable, "store not reachable: %v", err)
		}
		return writeJSON(w, 200, map[string]any{"ready": true})
	})
	s.route("GET /api/v1/openapi.json", "openapi", RoleNone, s.openAPI)
	s.route("GET /api/v1/whoami", "whoami", RoleViewer, func(w http.ResponseWriter, r *http.Request, p principal) error {
		return writeJSON(w, 200, p.tok.info())
	})
	s.route("GET /api/v1/envs", "envs.list", RoleViewer, s.listEnvs)
	s.route("POST /api/v1/envs", "envs.create", RoleAdmin, s.createEnv)
	s.route("GET /api/v1/envs/{env}", "envs.get", RoleViewer, s.getEnv)
	s.route("GET /api/v1/envs/{env}/snapshot", "snapshot", RoleViewer, s.snapshot)
	s.route("GET /api/v1/signing-keys", "signing-keys", RoleViewer, s.signingKeys)
	s.route("GET /api/v1/envs/{env}/signed-changesets", "changesets.signed", RoleViewer, s.signedChangesets)
	s.route("GET /api/v1/envs/{env}/check", "envs.check", RoleViewer, s.checkEnv)
	s.route("POST /api/v1/envs/{env}/repair", "envs.repair", RoleAdmin, s.repairEnv)
	s.route("GET /api/v1/envs/{env}/changesets", "changesets.list", RoleViewer, s.listChangesets)
	s.route("POST /api/v1/envs/{env}/changesets", "changesets.commit", RoleEditor, s.commit)
	s.route("GET /api/v1/envs/{env}/changesets/{version}", "changesets.get", RoleViewer, s.getChangeset)
	s.route("GET /api/v1/envs/{env}/flags", "flags.list", RoleViewer, s.listFlags)
	s.route("GET /api/v1/envs/{env}/flags/{key}", "flags.get", RoleViewer, s.getFlag)
	s.route("PUT /api/v1/envs/{env}/flags/{key}", "flags.put", RoleEditor, s.putFlag)
	s.route("DELETE /api/v1/envs/{env}/flags/{key}", "flags.delete", RoleEditor, s.deleteFlag)
	s.route("PATCH /api/v1/envs/{env}/flags/{key}", "flags.patch", RoleEditor, s.patchFlag)
	s.route("GET /api/v1/envs/{env}/export", "export", RoleViewer, s.export)
	s.route("POST /api/v1/envs/{env}/apply", "apply", RoleViewer, s.applyFile)
	s.route("GET /api/v1/envs/{env}/history", "history", RoleViewer, s.history)
	s.route("GET /api/v1/envs/{env}/sidecars", "sidecars", RoleViewer, s.sidecars)
	s.route("POST /api/v1/envs/{env}/nats-credentials", "nats-credentials", RoleViewer, s.natsCredentials)
	s.route("POST /api/v1/envs/{env}/telemetry", "telemetry", RoleViewer, s.telemetryIngest)
	s.route("GET /api/v1/envs/{env}/diff", "diff", RoleViewer, s.diff)
	s.route("POST /api/v1/envs/{env}/rollback", "rollback", RoleViewer, s.rollback)
	s.route("POST /api/v1/envs/{env}/promote", "promote", RoleEditor, s.promote)
	s.route("GET /api/v1/envs/{env}/change-requests", "change-requests.list", RoleViewer, s.listChangeRequests)
	s.route("GET /api/v1/envs/{env}/change-requests/{id}", "change-requests.get", RoleViewer, s.getChangeRequest)
	s.route("POST /api/v1/envs/{env}/change-requests/{id}/approve", "change-requests.approve", RoleApprover, s.decide(true))
	s.route("POST /api/v1/envs/{env}/change-requests/{id}/reject", "change-requests.reject", RoleApprover, s.decide(false))
	s.route("GET /api/v1/emergencies", "emergencies", RoleViewer, s.emergencies)
	s.route("POST /api/v1/envs/{env}/changesets/{version}/review", "emergencies.review", RoleApprover, s.reviewEmergency)
	s.route("GET /api/v1/audit", "audit.list", RoleAdmin, s.auditList)
	s.route("GET /api/v1/audit/verify", "audit.verify", RoleAdmin, s.auditVerify)
	s.route("GET /api/v1/audit/anchors", "audit.anchors", RoleAdmin, s.auditAnchorsRoute)
	s.route("GET /api/v1/tokens", "tokens.list", RoleAdmin, s.listTokens)
	s.route("POST /api/v1/tokens", "tokens.create", RoleAdmin, s.createToken)
	s.route("DELETE /api/v1/tokens/{id}", "tokens.revoke", RoleAdmin, s.revokeToken)
	s.usageRoutes()
	s.webhookRoutes()
	s.eventRoutes()
	s.incidentRoutes()
	s.lifecycleRoutes()
	s.experimentRoutes()
	s.route("POST /api/v1/envs/{env}/validate", "validate", RoleViewer, s.validateFlag)
	// The web console (package console): its page at "/" and assets under
	// /console/. Every other path outside /api/v1 stays a JSON 404 below.
	s.mux.Handle("GET /{$}", console.Handler())
	s.mux.Handle("GET "+console.Prefix, console.Handler())
	s.route("/", "unknown", RoleNone, func(w http.ResponseWriter, r *http.Request, _ principal) error {
		return newErr(CodeNotFound, "no route %s %s; the API lives under /api/v1 (see docs)", r.Method, r.URL.Path)
	})
}

func (s *Server) listEnvs(w http.ResponseWriter, r *http.Request, _ principal) error {
	envs, err := s.o.Store.Envs(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"envs": envs})
}

func (s *Server) createEnv(w http.ResponseWriter, r *http.Request, p principal) error {
	var req config.EnvSettings
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	req.CreatedAt = time.Time{}
	if err := checkEnvSettings(req); err != nil {
		return err
	}
	err := s.o.Store.CreateEnv(r.Context(), req)
	switch {
	case errors.Is(err, config.ErrEnvExists):
		return fieldErr(CodeExists, "name", "environment %q already exists", req.Name)
	case err != nil:
		return err
	}
	env, _ := s.o.Store.Env(r.Context(), req.Name)
	s.record(r.Context(), p, "env.create", req.Name, req.Name, "created", map[string]any{"protected": req.Protected})
	return writeJSON(w, http.StatusCreated, env)
}

func (s *Server) getEnv(w http.ResponseWriter, r *http.Request, _ principal) error {
	env, err := s.o.Store.Env(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	head, err := s.o.Store.Head(r.Context(), env.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"name": env.Name, "protected": env.Protected, "createdAt": env.CreatedAt,
		"version": head.Version, "hash": head.Hash, "flags": head.Doc.Len()})
}

// snapshot serves the whole flag set, signed: what sidecars poll. The ETag
// is the identity "<version>-<hash>", so an unchanged set costs a 304 and a
// same-version divergence does not; the 304 is answered from the head alone,
// before any record is built, and the record (signed, JSON-encoded) is
// memoized per (version, hash) by the store.
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, _ principal) error {
	head, err := s.o.Store.Head(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	s.notePoll(r, head.Env)
	etag := snapshotETag(head.Version, head.Hash)
	w.Header().Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	_, body, err := s.o.Store.SignedRecord(head)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, err = w.Write(body)
	return err
}

func (s *Server) listChangesets(w http.ResponseWriter, r *http.Request, _ principal) error {
	q, err := queryUints(r, "after", "limit")
	if err != nil {
		return err
	}
	after, limit := q[0], q[1]
	list, err := s.o.Store.Changesets(r.Context(), r.PathValue("env"), after, int(limit))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"changesets": list})
}

func (s *Server) getChangeset(w http.ResponseWriter, r *http.Request, _ principal) error {
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 64)
	if err != nil || v == 0 {
		return fieldErr(CodeBadRequest, "version", "version %q: must be a positive integer", r.PathValue("version"))
	}
	cs, err := s.o.Store.Changeset(r.Context(), r.PathValue("env"), v)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, cs)
}

// writeRequest is the body of a changeset commit.
type writeRequest struct {
	Reason    string          `json:"reason"`
	Emergency bool            `json:"emergency"`
	Changes   []config.Change `json:"changes"`
	// Metadata, when present, replaces the flag-set metadata; Evaluators,
	// when present (and non-empty), replaces `$evaluators`. Both are
	// versioned with the flags and validated with them.
	Metadata   map[string]any             `json:"metadata,omitempty"`
	Evaluators map[string]json.RawMessage `json:"evaluators,omitempty"`
}

// changeset is the request as a changeset authored by p.
func (req writeRequest) changeset(env string, p principal) *config.Changeset {
	return &config.Changeset{Env: env, Author: p.actor(), Reason: req.Reason, Emergency: req.Emergency, Changes: req.Changes,
		Metadata: req.Metadata, Evaluators: req.Evaluators}
}

func (s *Server) commit(w http.ResponseWriter, r *http.Request, p principal) error {
	var req writeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	return s.apply(w, r, p, req)
}

// apply runs a write through the environment's rules and the store. In a
// protected environment a normal write becomes a change request; an
// emergency write by an approver applies directly and is flagged.
func (s *Server) apply(w http.ResponseWriter, r *http.Request, p principal, req writeRequest) error {
	envName := r.PathValue("env")
	env, err := s.o.Store.Env(r.Context(), envName)
	if err != nil {
		return err
	}
	if (env.Protected || req.Emergency) && strings.TrimSpace(req.Reason) == "" {
		return &config.ValidationError{Problems: problemList("reason", "required for emergency changes and in protected environments")}
	}
	if req.Emergency && p.tok.RoleIn(envName) < RoleApprover {
		s.commits.WithLabelValues(envName, "forbidden").Inc()
		return s.deny(r.Context(), p, "emergency", envName, flagsOf(req.Changes), map[string]any{"reason": req.Reason},
			newErr(CodeForbidden, "emergency changes need the approver role in %s", envName))
	}
	if err := s.checkPolicy(r.Context(), env, req.Changes); err != nil {
		s.commits.WithLabelValues(envName, "invalid").Inc()
		return err
	}
	if env.Protected && !req.Emergency {
		return s.openChangeRequest(w, r, p, envName, req)
	}
	return s.commitChanges(w, r, p, envName, req.changeset(envName, p))
}

// commitChanges commits and answers 201 with the changeset.
func (s *Server) commitChanges(w http.ResponseWriter, r *http.Request, p principal, envName string, in *config.Changeset) error {
	warnings, err := s.checkExpired(r.Context(), envName, in.Changes)
	if err != nil {
		s.commits.WithLabelValues(envName, "invalid").Inc()
		return err
	}
	cs, err := s.commitAnchored(r.Context(), p, in)
	var ce *config.ConflictError
	var ve *config.ValidationError
	switch {
	case errors.As(err, &ce):
		s.commits.WithLabelValues(envName, "conflict").Inc()
		s.log.Info("write conflict", zap.String("env", envName), zap.String("token", p.tok.ID), zap.Int("flags", len(ce.Conflicts)))
		s.record(r.Context(), p, "commit", envName, flagsOf(in.Changes), "conflict", nil)
		return err
	case errors.As(err, &ve):
		s.commits.WithLabelValues(envName, "invalid").Inc()
		s.record(r.Context(), p, "commit", envName, flagsOf(in.Changes), "rejected", map[string]any{"problems": len(ve.Problems)})
		return err
	case err != nil:
		return err
	}
	s.commits.WithLabelValues(envName, "committed").Inc()
	details := map[string]any{"version": cs.Version, "reason": cs.Reason}
	action := "commit"
	switch {
	case cs.RollbackTo > 0:
		action, details["rollbackTo"] = "rollback", cs.RollbackTo
	case cs.PromotedFrom != "":
		action, details["promotedFrom"] = "promote", cs.PromotedFrom
	}
	if cs.ChangeRequest != "" {
		details["changeRequest"] = cs.ChangeRequest
	}
	if cs.Emergency {
		s.emergency.Inc()
		details["emergency"] = true
		s.log.Warn("emergency change applied", zap.String("env", envName), zap.Uint64("version", cs.Version), zap.String("author", cs.Author), zap.String("reason", cs.Reason))
	} else {
		s.log.Info("changeset committed", zap.String("env", envName), zap.Uint64("version", cs.Version), zap.String("author", cs.Author), zap.Int("changes", len(cs.Changes)))
	}
	if len(warnings) > 0 {
		details["warnings"] = warnings
	}
	s.record(r.Context(), p, action, envName, flagsOf(cs.Changes), "committed", details)
	return writeJSON(w, http.StatusCreated, withWarnings(cs, warnings))
}

func flagsOf(changes []config.Change) string {
	names := make([]string, len(changes))
	for i, c := range changes {
		names[i] = c.Flag
	}
	return strings.Join(names, ",")
}

// checkPolicy enforces the environment's lifecycle policy on new flags.
func (s *Server) checkPolicy(ctx context.Context, env config.EnvSettings, changes []config.Change) error {
	if !env.RequireOwner && !env.RequireExpires && env.MaxLifetime == "" {
		return nil
	}
	head, err := s.o.Store.Head(ctx, env.Name)
	if err != nil {
		return err
	}
	maxLife, _ := time.ParseDuration(env.MaxLifetime)
	var problems []evaluator.Problem
	for i, ch := range changes {
		if ch.Op != config.OpPut || head.Doc.Flag(ch.Flag) != nil {
			continue // policy applies to new flags
		}
		var f struct {
			Owner   string `json:"owner"`
			Expires string `json:"expires"`
		}
		_ = json.Unmarshal(ch.Definition, &f)
		path := fmt.Sprintf("changes[%d].definition", i)
		if env.RequireOwner && strings.TrimSpace(f.Owner) == "" {
			problems = append(problems, evaluator.Problem{Path: path + ".owner", Reason: fmt.Sprintf("new flags in %s must name an owner", env.Name)})
		}
		if env.RequireExpires && f.Expires == "" {
			problems = append(problems, evaluator.Problem{Path: path + ".expires", Reason: fmt.Sprintf("new flags in %s must have an expiry date", env.Name)})
		}
		if maxLife > 0 && f.Expires != "" {
			fd := config.FlagDoc{Expires: f.Expires}
			if exp, ok := fd.ExpiresAt(); ok && exp.After(time.Now().Add(maxLife)) {
				problems = append(problems, evaluator.Problem{Path: path + ".expires", Reason: fmt.Sprintf("%s is beyond %s's maximum flag lifetime of %s", f.Expires, env.Name, env.MaxLifetime)})
			}
		}
	}
	if len(problems) > 0 {
		return &config.ValidationError{Problems: problems}
	}
	return nil
}

func (s *Server) openChangeRequest(w http.ResponseWriter, r *http.Request, p principal, envName string, req writeRequest) error {
	if len(req.Changes) == 0 && req.Metadata == nil && req.Evaluators == nil {
		return &config.ValidationError{Problems: problemList("changes", "at least one change is required")}
	}
	// Validate now so nobody approves a change that cannot apply.
	head, err := s.o.Store.Head(r.Context(), envName)
	if err != nil {
		return err
	}
	if _, err := head.Doc.Apply(&config.Changeset{Changes: req.Changes, Metadata: req.Metadata, Evaluators: req.Evaluators}); err != nil {
		return err
	}
	warnings, err := s.checkExpired(r.Context(), envName, req.Changes)
	if err != nil {
		return err
	}
	cr := &ChangeRequest{ID: newID(), Env: envName, Author: p.actor(), AuthorID: p.tok.ID, Reason: req.Reason, Changes: req.Changes,
		Metadata: req.Metadata, Evaluators: req.Evaluators, CreatedAt: time.Now().UTC(), State: "open"}
	if err := s.flow.create(r.Context(), cr); err != nil {
		return err
	}
	s.approvals.WithLabelValues(envName, "opened").Inc()
	s.record(r.Context(), p, "change-request", envName, cr.ID, "opened", map[string]any{"flags": flagsOf(cr.Changes)})
	s.log.Info("change request opened", zap.String("env", envName), zap.String("id", cr.ID), zap.String("author", cr.Author))
	s.notifyChangeRequest(r.Context(), cr)
	out := map[string]any{"changeRequest": cr, "note": envName + " is protected: an approver other than you must approve this change request"}
	if len(warnings) > 0 {
		out["warnings"] = warnings
	}
	return writeJSON(w, http.StatusAccepted, out)
}

func (s *Server) listChangeRequests(w http.ResponseWriter, r *http.Request, _ principal) error {
	state := r.URL.Query().Get("state")
	switch state {
	case "", "open", "applied", "rejected":
	default:
		return fieldErr(CodeBadRequest, "state", "state %q: allowed open, applied, rejected", state)
	}
	list, err := s.flow.list(r.Context(), r.PathValue("env"), state)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"changeRequests": list})
}

func (s *Server) getChangeRequest(w http.ResponseWriter, r *http.Request, _ principal) error {
	cr, _, err := s.flow.get(r.Context(), r.PathValue("env"), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, cr)
}

// decide approves (applying it, with conflicts re-checked against the
// current head) or rejects an open change request.
func (s *Server) decide(approve bool) handler {
	return func(w http.ResponseWriter, r *http.Request, p principal) error {
		env := r.PathValue("env")
		var req struct {
			Reason string `json:"reason"`
		}
		if r.ContentLength != 0 {
			if err := decodeBody(r, &req); err != nil {
				return err
			}
		}
		cr, rev, err := s.flow.get(r.Context(), env, r.PathValue("id"))
		if err != nil {
			return err
		}
		if cr.State != "open" {
			return newErr(CodeDecided, "change request %s is already %s", cr.ID, cr.State)
		}
		if cr.AuthorID == p.tok.ID {
			action := "approve"
			if !approve {
				action = "reject"
			}
			return s.deny(r.Context(), p, action, env, cr.ID, map[string]any{"why": "author cannot decide own change request"},
				newErr(CodeForbidden, "you wrote change request %s; someone else must approve or reject it", cr.ID))
		}
		now := time.Now().UTC()
		cr.DecidedBy, cr.DecidedAt = p.actor(), &now
		if !approve {
			cr.State, cr.Note = "rejected", req.Reason
			if err := s.flow.update(r.Context(), cr, rev); err != nil {
				return err // decided concurrently (409), or the store's failure
			}
			s.approvals.WithLabelValues(env, "rejected").Inc()
			s.record(r.Context(), p, "reject", env, cr.ID, "rejected", map[string]any{"reason": req.Reason})
			return writeJSON(w, 200, cr)
		}
		if _, err := s.checkExpired(r.Context(), env, cr.Changes); err != nil {
			return err // the flag expired while the request waited, and env blocks
		}
		cs, err := s.commitAnchored(r.Context(), p, &config.Changeset{Env: env, Author: cr.Author, Reason: cr.Reason + " (approved by " + p.actor() + ")", ChangeRequest: cr.ID, Changes: cr.Changes,
			Metadata: cr.Metadata, Evaluators: cr.Evaluators})
		if err != nil {
			s.record(r.Context(), p, "approve", env, cr.ID, "failed", map[string]any{"error": err.Error()})
			return err // 409 if the flags moved on since the request was written
		}
		cr.State, cr.Version = "applied", cs.Version
		if err := s.flow.update(r.Context(), cr, rev); err != nil {
			s.log.Error("change request applied but its record was not updated", zap.String("id", cr.ID), zap.Error(err))
		}
		s.approvals.WithLabelValues(env, "approved").Inc()
		s.record(r.Context(), p, "approve", env, cr.ID, "applied", map[string]any{"version": cs.Version})
		s.log.Info("change request approved and applied", zap.String("env", env), zap.String("id", cr.ID), zap.Uint64("version", cs.Version))
		return writeJSON(w, 200, map[string]any{"changeRequest": cr, "changeset": cs})
	}
}

// emergencies lists emergency changes from the index (every version, not
// only the first 1,000), with their reviews.
func (s *Server) emergencies(w http.ResponseWriter, r *http.Request, p principal) error {
	onlyOpen := r.URL.Query().Get("reviewed") == "false"
	envs, err := s.o.Store.Envs(r.Context())
	if err != nil {
		return err
	}
	type item struct {
		*config.Changeset
		Review *Review `json:"review,omitempty"`
	}
	out := []item{}
	for _, e := range envs {
		if p.tok.RoleIn(e.Name) < RoleViewer {
			continue
		}
		list, err := s.emergencyList(r.Context(), e.Name)
		if err != nil {
			return err
		}
		for _, rec := range list {
			rv, done := s.flow.reviewed(r.Context(), e.Name, rec.Version)
			if onlyOpen && done {
				continue
			}
			cs, err := s.o.Store.Changeset(r.Context(), e.Name, rec.Version)
			if err != nil {
				return err
			}
			if cs.Foreign != "" {
				continue // erased or replaced since it was indexed (pennon doctor reports it)
			}
			out = append(out, item{Changeset: cs, Review: rv})
		}
	}
	return writeJSON(w, 200, map[string]any{"emergencies": out})
}

func (s *Server) reviewEmergency(w http.ResponseWriter, r *http.Request, p principal) error {
	env := r.PathValue("env")
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 64)
	if err != nil {
		return fieldErr(CodeBadRequest, "version", "version %q: must be a positive integer", r.PathValue("version"))
	}
	cs, err := s.o.Store.Changeset(r.Context(), env, v)
	if err != nil {
		return err
	}
	if !cs.Emergency {
		return newErr(CodeValidation, "version %d of %s is not an emergency change", v, env)
	}
	// Whoever applied an emergency change cannot also be its reviewer. The
	// token ID recorded at commit decides (display names can be shared or
	// chosen to look like someone else's).
	authorID := tokenIDOf(cs.Author)
	if rec, err := s.emergencyRecord(r.Context(), env, v); err != nil {
		return err
	} else if rec != nil && rec.AuthorID != "" {
		authorID = rec.AuthorID
	}
	if authorID == p.tok.ID {
		return s.deny(r.Context(), p, "review", env, strconv.FormatUint(v, 10), map[string]any{"why": "author cannot review own emergency change"},
			newErr(CodeForbidden, "you applied emergency change %d in %s; another approver must review it", v, env))
	}
	var req struct {
		Note string `json:"note"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(r, &req); err != nil {
			return err
		}
	}
	rv := Review{Env: env, Version: v, ReviewedBy: p.actor(), ReviewedAt: time.Now().UTC(), Note: req.Note}
	if err := s.flow.review(r.Context(), rv); err != nil {
		return err // already reviewed (409), or the store's failure
	}
	s.record(r.Context(), p, "review", env, strconv.FormatUint(v, 10), "reviewed", map[string]any{"note": req.Note})
	return writeJSON(w, 200, rv)
}

func (s *Server) diff(w http.ResponseWriter, r *http.Request, _ principal) error {
	q, err := queryUints(r, "from", "to")
	if err != nil {
		return err
	}
	from, to := q[0], q[1]
	env := r.PathValue("env")
	if r.URL.Query().Get("to") == "" {
		head, err := s.o.Store.Head(r.Context(), env)
		if err != nil {
			return err
		}
		to = head.Version
	}
	d, err := s.o.Store.Diff(r.Context(), env, from, to)
	if err != nil {
		return err
	}
	if r.URL.Query().Get("format") == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, err := w.Write([]byte(d.Text()))
		return err
	}
	return writeJSON(w, 200, d)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, p principal) error {
	var req struct {
		ToVersion uint64   `json:"toVersion"`
		Flags     []string `json:"flags"`
		Reason    string   `json:"reason"`
		DryRun    bool     `json:"dryRun"`
		Emergency bool     `json:"emergency"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	env := r.PathValue("env")
	plan, err := s.o.Store.PlanRollback(r.Context(), env, req.ToVersion, req.Flags)
	if err != nil {
		return err
	}
	if req.DryRun {
		if r.URL.Query().Get("format") == "text" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, err := w.Write([]byte(plan.Text()))
			return err
		}
		return writeJSON(w, 200, plan)
	}
	if p.tok.RoleIn(env) < RoleEditor {
		s.commits.WithLabelValues(env, "forbidden").Inc()
		return s.deny(r.Context(), p, "rollback", env, strings.Join(req.Flags, ","), map[string]any{"toVersion": req.ToVersion, "reason": req.Reason},
			newErr(CodeForbidden, "rolling back %s needs the editor role (a dry run needs viewer)", env))
	}
	if plan.Empty() {
		return newErr(CodeValidation, "nothing to roll back: the flags are the same at version %d and now", req.ToVersion)
	}
	envSet, err := s.o.Store.Env(r.Context(), env)
	if err != nil {
		return err
	}
	if envSet.Protected && !req.Emergency {
		return s.openChangeRequest(w, r, p, env, writeRequest{Reason: "rollback to version " + strconv.FormatUint(req.ToVersion, 10) + ": " + req.Reason, Changes: plan.Changes, Metadata: plan.Metadata, Evaluators: plan.Evaluators})
	}
	if req.Emergency && p.tok.RoleIn(env) < RoleApprover {
		s.commits.WithLabelValues(env, "forbidden").Inc()
		return s.deny(r.Context(), p, "emergency", env, strings.Join(req.Flags, ","), map[string]any{"toVersion": req.ToVersion, "reason": req.Reason},
			newErr(CodeForbidden, "emergency changes need the approver role in %s", env))
	}
	if strings.TrimSpace(req.Reason) == "" {
		return &config.ValidationError{Problems: problemList("reason", "a rollback needs a reason")}
	}
	return s.commitChanges(w, r, p, env, plan.Changeset(p.actor(), req.Reason, req.Emergency))
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request, p principal) error {
	var req struct {
		From   string   `json:"from"`
		Flags  []string `json:"flags"`
		Reason string   `json:"reason"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	to := r.PathValue("env")
	if req.From == "" || req.From == to {
		return &config.ValidationError{Problems: problemList("from", "the source environment, different from "+to)}
	}
	if p.tok.RoleIn(req.From) < RoleViewer {
		s.commits.WithLabelValues(to, "forbidden").Inc()
		return s.deny(r.Context(), p, "promote", to, strings.Join(req.Flags, ","), map[string]any{"from": req.From},
			newErr(CodeForbidden, "promoting from %s needs at least the viewer role there", req.From))
	}
	promo, err := s.o.Store.Promotion(r.Context(), req.From, to, req.Flags)
	if err != nil {
		return err
	}
	changes, promotedFrom := promo.Changes, promo.PromotedFrom
	env, err := s.o.Store.Env(r.Context(), to)
	if err != nil {
		return err
	}
	if err := s.checkPolicy(r.Context(), env, changes); err != nil {
		return err
	}
	reason := fmt.Sprintf("promote from %s: %s", promotedFrom, req.Reason)
	if env.Protected {
		return s.openChangeRequest(w, r, p, to, writeRequest{Reason: reason, Changes: changes, Evaluators: promo.Evaluators})
	}
	return s.commitChanges(w, r, p, to, &config.Changeset{Env: to, Author: p.actor(), Reason: reason, PromotedFrom: promotedFrom, Changes: changes, Evaluators: promo.Evaluators})
}

func (s *Server) auditList(w http.ResponseWriter, r *http.Request, _ principal) error {
	q, err := queryUints(r, "after", "limit")
	if err != nil {
		return err
	}
	after, limit := q[0], q[1]
	list, err := s.audit.Entries(r.Context(), after, int(limit))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"entries": list})
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request, _ principal) error {
	res, err := s.verifyAudit(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, 200, res)
}

func problemList(path, reason string) []evaluator.Problem {
	return []evaluator.Problem{{Path: path, Reason: reason}}
}

func (s *Server) listFlags(w http.ResponseWriter, r *http.Request, _ principal) error {
	head, err := s.o.Store.Head(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	type item struct {
		Key        string          `json:"key"`
		Version    uint64          `json:"version"`
		Definition json.RawMessage `json:"definition"`
	}
	out := []item{}
	for _, k := range head.Doc.FlagKeys() {
		out = append(out, item{Key: k, Version: head.FlagVersion(k), Definition: head.Doc.FlagJSON(k)})
	}
	return writeJSON(w, 200, map[string]any{"version": head.Version, "flags": out})
}

func (s *Server) getFlag(w http.ResponseWriter, r *http.Request, _ principal) error {
	env, key := r.PathValue("env"), r.PathValue("key")
	head, err := s.o.Store.Head(r.Context(), env)
	if err != nil {
		return err
	}
	def := head.Doc.FlagJSON(key)
	if def == nil {
		return newErr(CodeNotFound, "flag %q not found in %s", key, env)
	}
	out := map[string]any{"key": key, "version": head.FlagVersion(key), "definition": def}
	if cs, err := s.o.Store.Changeset(r.Context(), env, head.FlagVersion(key)); err == nil {
		out["author"], out["time"] = cs.Author, cs.Time
	}
	return writeJSON(w, 200, out)
}

func (s *Server) putFlag(w http.ResponseWriter, r *http.Request, p principal) error {
	var req struct {
		Definition  json.RawMessage `json:"definition"`
		BaseVersion uint64          `json:"baseVersion"`
		Reason      string          `json:"reason"`
		Emergency   bool            `json:"emergency"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if len(req.Definition) == 0 {
		return &config.ValidationError{Problems: problemList("definition", "required: the flag's full JSON definition")}
	}
	return s.apply(w, r, p, writeRequest{Reason: req.Reason, Emergency: req.Emergency,
		Changes: []config.Change{{Flag: r.PathValue("key"), Op: config.OpPut, Definition: req.Definition, BaseVersion: req.BaseVersion}}})
}

func (s *Server) deleteFlag(w http.ResponseWriter, r *http.Request, p principal) error {
	base, err := queryUint(r, "baseVersion")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	return s.apply(w, r, p, writeRequest{Reason: q.Get("reason"), Emergency: q.Get("emergency") == "true",
		Changes: []config.Change{{Flag: r.PathValue("key"), Op: config.OpDelete, BaseVersion: base}}})
}

func (s *Server) history(w http.ResponseWriter, r *http.Request, _ principal) error {
	q, err := queryUints(r, "before", "limit")
	if err != nil {
		return err
	}
	before, limit := q[0], q[1]
	list, err := s.o.Store.History(r.Context(), r.PathValue("env"), r.URL.Query().Get("flag"), before, int(limit))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"changesets": list})
}

func (s *Server) sidecars(w http.ResponseWriter, r *http.Request, _ principal) error {
	env := r.PathValue("env")
	head, err := s.o.Store.Head(r.Context(), env)
	if err != nil {
		return err
	}
	list := []config.SidecarReport{}
	if s.o.Sidecars != nil {
		list = s.o.Sidecars.List(env)
	}
	behind := []string{}
	for _, sc := range list {
		if sc.Version < head.Version {
			behind = append(behind, sc.ID)
		}
	}
	return writeJSON(w, 200, map[string]any{"version": head.Version, "sidecars": list, "behind": behind})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ principal) error {
	list, err := s.o.Tokens.List(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"tokens": list})
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p principal) error {
	var req struct {
		Name      string            `json:"name"`
		Roles     map[string]string `json:"roles"`
		ExpiresIn string            `json:"expiresIn"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	var ttl time.Duration
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			return fieldErr(CodeValidation, "expiresIn", "expiresIn %q: a positive Go duration such as 720h", req.ExpiresIn)
		}
		ttl = d
	}
	secret, info, err := s.o.Tokens.Create(r.Context(), req.Name, req.Roles, ttl, p.tok.ID)
	if err != nil {
		return err // typed: 422 naming the field, or the store's failure
	}
	s.log.Info("token created", zap.String("id", info.ID), zap.String("name", info.Name), zap.String("by", p.tok.ID))
	s.record(r.Context(), p, "token.create", "", info.ID, "created", map[string]any{"name": info.Name, "roles": info.Roles})
	return writeJSON(w, http.StatusCreated, map[string]any{"token": secret, "info": info, "note": "the token is shown once; pennon stores only its hash"})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := s.o.Tokens.Revoke(r.Context(), id); errors.Is(err, ErrTokenNotFound) {
		return newErr(CodeNotFound, "%v", err)
	} else if err != nil {
		return err
	}
	s.log.Info("token revoked", zap.String("id", id), zap.String("by", p.tok.ID))
	s.record(r.Context(), p, "token.revoke", "", id, "revoked", nil)
	return writeJSON(w, 200, map[string]any{"revoked": id})
}
