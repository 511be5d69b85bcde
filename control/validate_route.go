package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/pennon-dev/pennon/config"
)

// validateRequest is the body of POST /api/v1/envs/{env}/validate: one
// flag definition to check as it would be checked on PUT.
type validateRequest struct {
	Flag       string          `json:"flag"`
	Definition json.RawMessage `json:"definition"`
}

// validateProblem is one problem, with Path relative to the request body
// ("definition.targeting.if[1]") so an editor can show it at its field.
type validateProblem struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// validateFlag answers whether a PUT of the definition would be accepted
// now: the same parse, flag-set validation (prerequisites, $ref, variants)
// and environment policy as a write, against the head, with nothing
// written. The web console calls it as the user types, so an editor shows
// the API's own verdict instead of a second, drifting copy of the rules.
// Problems are the answer (200), not an error; a malformed request is 400.
func (s *Server) validateFlag(w http.ResponseWriter, r *http.Request, _ principal) error {
	var req validateRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	problems := []validateProblem{}
	switch {
	case strings.TrimSpace(req.Flag) == "":
		problems = append(problems, validateProblem{Path: "flag", Reason: "required: the key of the flag to check"})
	case len(req.Definition) == 0 || string(req.Definition) == "null":
		problems = append(problems, validateProblem{Path: "definition", Reason: "required: the flag's full JSON definition"})
	}
	if len(problems) > 0 {
		return writeJSON(w, http.StatusOK, map[string]any{"valid": false, "problems": problems})
	}
	envName := r.PathValue("env")
	env, err := s.o.Store.Env(r.Context(), envName)
	if err != nil {
		return err
	}
	head, err := s.o.Store.Head(r.Context(), envName)
	if err != nil {
		return err
	}
	changes := []config.Change{{Flag: req.Flag, Op: config.OpPut, Definition: req.Definition}}
	for _, err := range []error{s.checkPolicy(r.Context(), env, changes), s.expiredErr(r.Context(), envName, changes), applyErr(head.Doc, changes)} {
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			for _, p := range ve.Problems {
				problems = append(problems, validateProblem{Path: definitionPath(p.Path, req.Flag), Reason: p.Reason})
			}
		} else if err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"valid": len(problems) == 0, "problems": problems, "version": head.Version})
}

func applyErr(doc *config.Document, changes []config.Change) error {
	_, err := doc.Apply(&config.Changeset{Changes: changes})
	return err
}

// definitionPath rewrites a write's problem path to the request's: the
// flag's own problems ("flags.<key>.x", "changes[0].definition.x") become
// "definition.x"; problems elsewhere in the set (another flag whose
// prerequisite this breaks) keep their path.
func definitionPath(p, flag string) string {
	for _, prefix := range []string{"flags." + flag, "changes[0].definition"} {
		if rest, ok := strings.CutPrefix(p, prefix); ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
			return "definition" + rest
		}
	}
	return p
}
