package control

import (
	"net/http"
	"sort"

	"github.com/pennon-dev/pennon/experiment"
)

// ExperimentReader is what the experiment routes read
// (*experiment.Aggregator implements it).
type ExperimentReader interface {
	Get(env, flag string) (experiment.Snapshot, bool)
	Flags(env string) []string
}

func (s *Server) experimentRoutes() {
	s.route("GET /api/v1/envs/{env}/experiments", "experiments.list", RoleViewer, s.listExperiments)
	s.route("GET /api/v1/envs/{env}/experiments/{flag}", "experiments.report", RoleViewer, s.experimentReport)
}

// listExperiments lists the environment's experiment flags (defined now,
// or with data still kept), each with its verdict.
func (s *Server) listExperiments(w http.ResponseWriter, r *http.Request, _ principal) error {
	if s.o.Experiments == nil {
		return errf(http.StatusNotImplemented, CodeNotConfigured, "this control plane does not aggregate experiments")
	}
	env := r.PathValue("env")
	head, err := s.o.Store.Head(r.Context(), env)
	if err != nil {
		return err
	}
	keys := map[string]bool{}
	for _, k := range head.Doc.FlagKeys() {
		if f := head.Doc.Flag(k); f != nil && f.Experiment != nil {
			keys[k] = true
		}
	}
	for _, k := range s.o.Experiments.Flags(env) {
		keys[k] = true
	}
	type item struct {
		Flag    string `json:"flag"`
		Defined bool   `json:"defined"` // still an experiment in the current flag set
		Units   uint64 `json:"units"`
		Verdict string `json:"verdict"`
	}
	out := []item{}
	for k := range keys {
		it := item{Flag: k}
		f := head.Doc.Flag(k)
		it.Defined = f != nil && f.Experiment != nil
		snap, _ := s.o.Experiments.Get(env, k)
		for _, d := range snap.Totals {
			it.Units += d.Exposed
		}
		if it.Defined {
			if rep, err := experiment.Build(env, k, f, snap); err == nil {
				it.Verdict = rep.Verdict
			}
		} else {
			it.Verdict = "no longer an experiment in the current flag set"
		}
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Flag < out[j].Flag })
	return writeJSON(w, http.StatusOK, map[string]any{"env": env, "experiments": out})
}

// experimentReport is one experiment's statistics (?metric=K narrows the
// metrics to one).
func (s *Server) experimentReport(w http.ResponseWriter, r *http.Request, _ principal) error {
	if s.o.Experiments == nil {
		return errf(http.StatusNotImplemented, CodeNotConfigured, "this control plane does not aggregate experiments")
	}
	env, key := r.PathValue("env"), r.PathValue("flag")
	head, err := s.o.Store.Head(r.Context(), env)
	if err != nil {
		return err
	}
	f := head.Doc.Flag(key)
	if f == nil {
		return newErr(CodeNotFound, "flag %q not found in %s", key, env)
	}
	if f.Experiment == nil {
		return errf(http.StatusUnprocessableEntity, CodeValidation, "flag %q is not an experiment: add an \"experiment\" field ({\"control\": ..., \"metrics\": [...]}) to its definition", key)
	}
	snap, _ := s.o.Experiments.Get(env, key)
	rep, err := experiment.Build(env, key, f, snap)
	if err != nil {
		return errf(http.StatusUnprocessableEntity, CodeValidation, "%v", err)
	}
	if m := r.URL.Query().Get("metric"); m != "" {
		var keep []experiment.MetricReport
		var names []string
		for _, mr := range rep.Metrics {
			names = append(names, mr.Key)
			if mr.Key == m {
				keep = append(keep, mr)
			}
		}
		if keep == nil {
			return errf(http.StatusUnprocessableEntity, CodeValidation, "metric: %q is not a metric of this experiment (metrics: %v)", m, names)
		}
		rep.Metrics = keep
	}
	return writeJSON(w, http.StatusOK, rep)
}
