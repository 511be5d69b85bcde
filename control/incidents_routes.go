package control

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/incident/ledger"
)

// incidentRoutes list incident records (docs/incidents.md): what degraded,
// when, under which conditions, which fallbacks served how many answers and
// whether it recovered. An environment's viewers see its sidecars'
// records; the control plane's own records (no environment) are shown by
// GET /api/v1/incidents to tokens with a role on every environment ("*"),
// since they concern the whole installation.
func (s *Server) incidentRoutes() {
	s.route("GET /api/v1/envs/{env}/incidents", "incidents.env", RoleViewer, s.envIncidents)
	s.route("GET /api/v1/incidents", "incidents.list", RoleViewer, s.allIncidents)
}

// incidentItem is a record with its one-line summary.
type incidentItem struct {
	incident.Record
	Summary string `json:"summary"`
}

func (s *Server) envIncidents(w http.ResponseWriter, r *http.Request, _ principal) error {
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	return s.listIncidents(w, r, func(e string) bool { return e == env })
}

func (s *Server) allIncidents(w http.ResponseWriter, r *http.Request, p principal) error {
	return s.listIncidents(w, r, func(env string) bool {
		if env == "" {
			return p.tok.RoleIn("*") >= RoleViewer
		}
		return p.tok.RoleIn(env) >= RoleViewer
	})
}

func (s *Server) listIncidents(w http.ResponseWriter, r *http.Request, visible func(string) bool) error {
	if s.o.Incidents == nil {
		return newErr(CodeNotConfigured, "incident records are not kept by this control plane (Options.Incidents)")
	}
	f := ledger.Filter{Visible: visible, Limit: 100}
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return fieldErr(CodeBadRequest, "limit", "limit must be a number from 1 to 1000, got %q", v)
		}
		f.Limit = n
	}
	switch st := q.Get("status"); st {
	case "", incident.StatusOpen, incident.StatusRecovered, incident.StatusSuperseded:
		f.Status = st
	default:
		return fieldErr(CodeBadRequest, "status", "status must be open, recovered or superseded, got %q", st)
	}
	now := time.Now()
	recs := s.o.Incidents.List(f)
	out := make([]incidentItem, len(recs))
	for i := range recs {
		out[i] = incidentItem{Record: recs[i], Summary: recs[i].Summary(now)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"incidents": out})
}
