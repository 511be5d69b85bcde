package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/pennon-dev/pennon/config"
)

// Flag sets as files: export an environment as a flagd file, apply a file
// as one changeset with a plan, and patch one flag with a JSON merge patch.

// export serves the environment's flag set as a flagd-format file
// (canonical JSON). Pennon-Version says which version it is, so a later
// apply can be planned against it.
func (s *Server) export(w http.ResponseWriter, r *http.Request, _ principal) error {
	head, err := s.o.Store.Head(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	body := head.Doc.Export()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Pennon-Version", strconv.FormatUint(head.Version, 10))
	w.Header().Set("ETag", snapshotETag(head.Version, head.Hash))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, err = w.Write(body)
	return err
}

// applyRequest is the body of POST /envs/{env}/apply.
type applyRequest struct {
	// Document is a complete flag file (what `pennon export` writes).
	Document json.RawMessage `json:"document"`
	// Prune deletes the environment's flags (and $evaluators) that the
	// file does not have; without it they are kept and the plan lists them.
	Prune     bool   `json:"prune"`
	DryRun    bool   `json:"dryRun"`
	Reason    string `json:"reason"`
	Emergency bool   `json:"emergency"`
	// BaseVersions are the per-flag versions of the plan the caller showed
	// (its "baseVersions"): a flag changed since is a 409 naming it. Absent:
	// the current versions (no conflict check beyond the commit's own).
	BaseVersions map[string]uint64 `json:"baseVersions"`
}

func (s *Server) applyFile(w http.ResponseWriter, r *http.Request, p principal) error {
	var req applyRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	env := r.PathValue("env")
	if len(req.Document) == 0 {
		return &config.ValidationError{Problems: problemList("document", "required: the flag file (flagd format) to apply")}
	}
	plan, err := s.planFile(r, env, req)
	if err != nil {
		return err
	}
	if req.DryRun {
		if r.URL.Query().Get("format") == "text" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, err := w.Write([]byte(plan.Text()))
			return err
		}
		return writeJSON(w, 200, map[string]any{"plan": plan, "text": plan.Text()})
	}
	if p.tok.RoleIn(env) < RoleEditor {
		s.commits.WithLabelValues(env, "forbidden").Inc()
		return s.deny(r.Context(), p, "apply", env, flagsOf(plan.Changes), map[string]any{"reason": req.Reason},
			newErr(CodeForbidden, "applying a file to %s needs the editor role (a dry run needs viewer)", env))
	}
	if plan.Empty() {
		return writeJSON(w, 200, map[string]any{"plan": plan, "text": plan.Text(), "note": "nothing to apply: " + env + " already matches the file"})
	}
	reason := req.Reason
	if strings.TrimSpace(reason) == "" && !req.Emergency {
		if envSet, err := s.o.Store.Env(r.Context(), env); err == nil && !envSet.Protected {
			reason = "apply flag file"
		}
	}
	cw := &captureWriter{header: http.Header{}}
	if err := s.apply(cw, r, p, writeRequest{Reason: reason, Emergency: req.Emergency, Changes: plan.Changes, Metadata: plan.Metadata, Evaluators: plan.NewEvals}); err != nil {
		return err
	}
	out := map[string]any{"plan": plan, "text": plan.Text()}
	var res map[string]json.RawMessage
	if cw.code == http.StatusCreated {
		out["changeset"] = json.RawMessage(bytes.TrimSpace(cw.buf.Bytes()))
	} else if json.Unmarshal(cw.buf.Bytes(), &res) == nil {
		for k, v := range res {
			out[k] = v
		}
	}
	return writeJSON(w, cw.code, out)
}

// planFile parses the file and plans it against the current head.
func (s *Server) planFile(r *http.Request, env string, req applyRequest) (*config.ApplyPlan, error) {
	doc, err := config.Parse(req.Document)
	if err != nil {
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			for i := range ve.Problems {
				ve.Problems[i].Path = strings.TrimSuffix("document."+ve.Problems[i].Path, ".")
			}
		}
		return nil, err
	}
	head, err := s.o.Store.Head(r.Context(), env)
	if err != nil {
		return nil, err
	}
	return config.PlanApply(head, doc, req.Prune, req.BaseVersions)
}

// captureWriter keeps a handler's answer so another handler can wrap it.
type captureWriter struct {
	header http.Header
	code   int
	buf    bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.buf.Write(b)
}

// MergePatchType is the media type of RFC 7396 JSON merge patches.
const MergePatchType = "application/merge-patch+json"

// patchFlag applies a JSON merge patch (RFC 7396) to one flag: fields the
// patch does not name keep their value, null removes a field, objects merge
// recursively and anything else replaces. The base version is required, in
// the baseVersion query parameter, like DELETE; reason and emergency are
// query parameters too, since the body is the patch itself.
func (s *Server) patchFlag(w http.ResponseWriter, r *http.Request, p principal) error {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != MergePatchType {
		return newErr(CodeUnsupportedMedia, "content type %q: a PATCH body is a JSON merge patch; send Content-Type: %s", r.Header.Get("Content-Type"), MergePatchType)
	}
	q := r.URL.Query()
	if !q.Has("baseVersion") {
		return &config.ValidationError{Problems: problemList("baseVersion", "required query parameter: the flag version your patch is based on (GET the flag for it)")}
	}
	base, err := queryUint(r, "baseVersion")
	if err != nil {
		return err
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return newErr(CodeBadRequest, "request body: %v", err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return newErr(CodeBadRequest, "a flag's merge patch must be a JSON object ({…}); to delete the flag use DELETE")
	}
	if err := checkEnvelope(data, nil); err != nil {
		return err
	}
	var patch any
	if err := decodeNumbers(data, &patch); err != nil {
		return newErr(CodeBadRequest, "request body: %v", err)
	}
	env, key := r.PathValue("env"), r.PathValue("key")
	head, err := s.o.Store.Head(r.Context(), env)
	if err != nil {
		return err
	}
	cur := head.Doc.FlagJSON(key)
	if cur == nil {
		return newErr(CodeNotFound, "flag %q not found in %s; create it with PUT", key, env)
	}
	var target any
	if err := decodeNumbers(cur, &target); err != nil {
		return err
	}
	def, err := json.Marshal(mergePatch(target, patch))
	if err != nil {
		return err
	}
	return s.apply(w, r, p, writeRequest{Reason: q.Get("reason"), Emergency: q.Get("emergency") == "true",
		Changes: []config.Change{{Flag: key, Op: config.OpPut, Definition: def, BaseVersion: base}}})
}

// decodeNumbers decodes JSON keeping numbers as written.
func decodeNumbers(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// mergePatch is RFC 7396's MergePatch(target, patch).
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	out := make(map[string]any, len(t)+len(p))
	for k, v := range t {
		out[k] = v
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], v)
	}
	return out
}
