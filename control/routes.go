package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
)

func (s *Server) routes() {
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.o.Registry, promhttp.HandlerOpts{}))
	s.route("GET /healthz", "healthz", RoleNone, func(w http.ResponseWriter, r *http.Request, _ principal) error {
		return writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	s.route("GET /readyz", "readyz", RoleNone, func(w http.ResponseWriter, r *http.Request, _ principal) error {
		if _, err := s.o.Store.Envs(r.Context()); err != nil {
			return errf(http.StatusServiceUnavailable, "unavailable", "store not reachable: %v", err)
		}
		return writeJSON(w, 200, map[string]any{"ready": true})
	})
	s.route("GET /api/v1/whoami", "whoami", RoleViewer, func(w http.ResponseWriter, r *http.Request, p principal) error {
		return writeJSON(w, 200, p.tok.info())
	})
	s.route("GET /api/v1/envs", "envs.list", RoleViewer, s.listEnvs)
	s.route("POST /api/v1/envs", "envs.create", RoleAdmin, s.createEnv)
	s.route("GET /api/v1/envs/{env}", "envs.get", RoleViewer, s.getEnv)
	s.route("GET /api/v1/envs/{env}/snapshot", "snapshot", RoleViewer, s.snapshot)
	s.route("GET /api/v1/envs/{env}/changesets", "changesets.list", RoleViewer, s.listChangesets)
	s.route("POST /api/v1/envs/{env}/changesets", "changesets.commit", RoleEditor, s.commit)
	s.route("GET /api/v1/envs/{env}/changesets/{version}", "changesets.get", RoleViewer, s.getChangeset)
	s.route("GET /api/v1/envs/{env}/flags", "flags.list", RoleViewer, s.listFlags)
	s.route("GET /api/v1/envs/{env}/flags/{key}", "flags.get", RoleViewer, s.getFlag)
	s.route("PUT /api/v1/envs/{env}/flags/{key}", "flags.put", RoleEditor, s.putFlag)
	s.route("DELETE /api/v1/envs/{env}/flags/{key}", "flags.delete", RoleEditor, s.deleteFlag)
	s.route("GET /api/v1/envs/{env}/history", "history", RoleViewer, s.history)
	s.route("GET /api/v1/envs/{env}/sidecars", "sidecars", RoleViewer, s.sidecars)
	s.route("GET /api/v1/tokens", "tokens.list", RoleAdmin, s.listTokens)
	s.route("POST /api/v1/tokens", "tokens.create", RoleAdmin, s.createToken)
	s.route("DELETE /api/v1/tokens/{id}", "tokens.revoke", RoleAdmin, s.revokeToken)
	s.route("/", "unknown", RoleNone, func(w http.ResponseWriter, r *http.Request, _ principal) error {
		return errf(http.StatusNotFound, "not_found", "no route %s %s; the API lives under /api/v1 (see docs)", r.Method, r.URL.Path)
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
	var req struct {
		Name      string `json:"name"`
		Protected bool   `json:"protected"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	err := s.o.Store.CreateEnv(r.Context(), config.EnvSettings{Name: req.Name, Protected: req.Protected})
	switch {
	case errors.Is(err, config.ErrEnvExists):
		return errf(http.StatusConflict, "exists", "environment %q already exists", req.Name)
	case err != nil && strings.HasPrefix(err.Error(), "name:"):
		return errf(http.StatusUnprocessableEntity, "validation", "%v", err)
	case err != nil:
		return err
	}
	env, _ := s.o.Store.Env(r.Context(), req.Name)
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

// snapshot serves the whole flag set: what sidecars poll. The ETag is the
// version, so an unchanged set costs a 304.
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, _ principal) error {
	rec, err := s.o.Store.Snapshot(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	etag := `"` + strconv.FormatUint(rec.Version, 10) + `"`
	w.Header().Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	return writeJSON(w, 200, rec)
}

func (s *Server) listChangesets(w http.ResponseWriter, r *http.Request, _ principal) error {
	after, err := queryUint(r, "after")
	if err != nil {
		return err
	}
	limit, err := queryUint(r, "limit")
	if err != nil {
		return err
	}
	list, err := s.o.Store.Changesets(r.Context(), r.PathValue("env"), after, int(limit))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"changesets": list})
}

func (s *Server) getChangeset(w http.ResponseWriter, r *http.Request, _ principal) error {
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 64)
	if err != nil || v == 0 {
		return errf(http.StatusBadRequest, "bad_request", "version %q: must be a positive integer", r.PathValue("version"))
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
}

func (s *Server) commit(w http.ResponseWriter, r *http.Request, p principal) error {
	var req writeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	return s.apply(w, r, p, req)
}

// apply runs a write through the environment's rules and the store.
func (s *Server) apply(w http.ResponseWriter, r *http.Request, p principal, req writeRequest) error {
	envName := r.PathValue("env")
	env, err := s.o.Store.Env(r.Context(), envName)
	if err != nil {
		return err
	}
	if env.Protected {
		if !req.Emergency {
			s.commits.WithLabelValues(envName, "forbidden").Inc()
			return errf(http.StatusForbidden, "protected", "environment %s is protected: changes need an approved change request, which this version of pennon does not implement yet; an approver may apply an emergency change with \"emergency\": true and a reason", envName)
		}
		if p.tok.RoleIn(envName) < RoleApprover {
			s.commits.WithLabelValues(envName, "forbidden").Inc()
			return errf(http.StatusForbidden, "forbidden", "emergency changes to %s need the approver role", envName)
		}
	}
	if (env.Protected || req.Emergency) && strings.TrimSpace(req.Reason) == "" {
		return &config.ValidationError{Problems: problemList("reason", "required for emergency changes and in protected environments")}
	}
	cs, err := s.o.Store.Commit(r.Context(), &config.Changeset{Env: envName, Author: p.tok.Name + " (" + p.tok.ID + ")", Reason: req.Reason, Emergency: req.Emergency, Changes: req.Changes})
	var ce *config.ConflictError
	var ve *config.ValidationError
	switch {
	case errors.As(err, &ce):
		s.commits.WithLabelValues(envName, "conflict").Inc()
		s.log.Info("write conflict", zap.String("env", envName), zap.String("token", p.tok.ID), zap.Int("flags", len(ce.Conflicts)))
		return err
	case errors.As(err, &ve):
		s.commits.WithLabelValues(envName, "invalid").Inc()
		return err
	case err != nil:
		return err
	}
	s.commits.WithLabelValues(envName, "committed").Inc()
	if cs.Emergency {
		s.emergency.Inc()
	}
	s.log.Info("changeset committed", zap.String("env", envName), zap.Uint64("version", cs.Version), zap.String("author", cs.Author), zap.Int("changes", len(cs.Changes)), zap.Bool("emergency", cs.Emergency))
	return writeJSON(w, http.StatusCreated, cs)
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
		out = append(out, item{Key: k, Version: head.FlagVersions[k], Definition: head.Doc.FlagJSON(k)})
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
		return errf(http.StatusNotFound, "not_found", "flag %q not found in %s", key, env)
	}
	out := map[string]any{"key": key, "version": head.FlagVersions[key], "definition": def}
	if cs, err := s.o.Store.Changeset(r.Context(), env, head.FlagVersions[key]); err == nil {
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
	before, err := queryUint(r, "before")
	if err != nil {
		return err
	}
	limit, err := queryUint(r, "limit")
	if err != nil {
		return err
	}
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
			return errf(http.StatusUnprocessableEntity, "validation", "expiresIn %q: a positive Go duration such as 720h", req.ExpiresIn)
		}
		ttl = d
	}
	secret, info, err := s.o.Tokens.Create(r.Context(), req.Name, req.Roles, ttl, p.tok.ID)
	if err != nil {
		return errf(http.StatusUnprocessableEntity, "validation", "%v", err)
	}
	s.log.Info("token created", zap.String("id", info.ID), zap.String("name", info.Name), zap.String("by", p.tok.ID))
	return writeJSON(w, http.StatusCreated, map[string]any{"token": secret, "info": info, "note": "the token is shown once; pennon stores only its hash"})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	if err := s.o.Tokens.Revoke(r.Context(), id); err != nil {
		return errf(http.StatusNotFound, "not_found", "%v", err)
	}
	s.log.Info("token revoked", zap.String("id", id), zap.String("by", p.tok.ID))
	return writeJSON(w, 200, map[string]any{"revoked": id})
}
