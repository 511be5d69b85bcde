package control

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/lifecycle"
)

// lifecycleRoutes serve the lifecycle report (docs/lifecycle.md). Without
// Options.Lifecycle the server builds a service over its store alone: the
// report then says "usage unknown" instead of calling flags unused, and no
// periodic check runs (the owner of Options.Lifecycle runs it).
func (s *Server) lifecycleRoutes() {
	if s.o.Lifecycle == nil {
		s.o.Lifecycle, _ = lifecycle.New(lifecycle.Options{Store: s.o.Store, Logger: s.log})
	}
	s.route("GET /api/v1/envs/{env}/lifecycle", "lifecycle", RoleViewer, s.lifecycleReport)
}

func (s *Server) lifecycleReport(w http.ResponseWriter, r *http.Request, _ principal) error {
	for k := range r.URL.Query() {
		return fieldErr(CodeBadRequest, k, "unknown query parameter %q; this route takes none (thresholds are the environment's lifecycle policy)", k)
	}
	rep, err := s.o.Lifecycle.Report(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}

// checkExpired applies the environment's lifecycle.expiredFlags rule to a
// write's changes (lifecycle.CheckExpired says which it covers). With
// "block" it refuses the write: a 422 whose problems name each flag, its
// expiry and the fix. With "warn" (the default) the write goes on and the
// returned warnings go into the response and the audit entry.
func (s *Server) checkExpired(ctx context.Context, envName string, changes []config.Change) ([]string, error) {
	env, err := s.o.Store.Env(ctx, envName)
	if err != nil {
		return nil, err
	}
	head, err := s.o.Store.Head(ctx, envName)
	if err != nil {
		return nil, err
	}
	found := lifecycle.CheckExpired(head.Doc, changes, time.Now())
	if len(found) == 0 {
		return nil, nil
	}
	if env.Lifecycle.WithDefaults().ExpiredFlags == config.ExpiredBlock {
		problems := make([]evaluator.Problem, len(found))
		for i, f := range found {
			problems[i] = evaluator.Problem{Path: f.Path, Reason: f.Message + fmt.Sprintf(" (%s blocks changes to expired flags: lifecycle.expiredFlags is block)", envName)}
		}
		return nil, &config.ValidationError{Problems: problems}
	}
	warnings := make([]string, len(found))
	flags := make([]string, len(found))
	for i, f := range found {
		warnings[i] = f.Message + fmt.Sprintf(" (allowed: lifecycle.expiredFlags is warn in %s)", envName)
		flags[i] = f.Flag
	}
	s.log.Info("change to expired flags allowed with a warning", zap.String("env", envName), zap.Strings("flags", flags))
	return warnings, nil
}

// withWarnings adds the expired-flag warnings to a changeset's response
// body (its fields unchanged, plus "warnings").
func withWarnings(cs *config.Changeset, warnings []string) any {
	if len(warnings) == 0 {
		return cs
	}
	return struct {
		*config.Changeset
		Warnings []string `json:"warnings"`
	}{cs, warnings}
}

// expiredErr is checkExpired's refusal alone (warnings dropped), for the
// validate route: a definition a PUT would have refused is not valid.
func (s *Server) expiredErr(ctx context.Context, envName string, changes []config.Change) error {
	_, err := s.checkExpired(ctx, envName, changes)
	return err
}
