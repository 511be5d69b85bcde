package control

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pennon-dev/pennon/usage"
)

// usageRoutes serve what the sidecars' usage reports add up to
// (docs/usage.md): per flag evaluations, variants, apps and errors, rollup
// series, and distribution-shift anomalies.
func (s *Server) usageRoutes() {
	s.route("GET /api/v1/envs/{env}/usage", "usage", RoleViewer, s.envUsage)
	s.route("GET /api/v1/envs/{env}/anomalies", "anomalies", RoleViewer, s.envAnomalies)
}

// usageQuery is the validated query of GET /usage.
type usageQuery struct {
	flag   string
	days   int
	gran   usage.Granularity
	series bool
	since  time.Time
}

// defaultSince is how far back a series goes without ?since=.
var defaultSince = [...]time.Duration{usage.Minute: time.Hour, usage.Hour: 24 * time.Hour, usage.Day: 30 * 24 * time.Hour}

func parseUsageQuery(r *http.Request, now time.Time) (usageQuery, error) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "flag", "days", "granularity", "since":
		default:
			return usageQuery{}, fieldErr(CodeBadRequest, k, "unknown query parameter %q; this route reads flag, days, granularity and since", k)
		}
	}
	u := usageQuery{flag: q.Get("flag"), days: 30}
	if q.Has("flag") && (u.flag == "" || len(u.flag) > 256) {
		return u, fieldErr(CodeBadRequest, "flag", "flag must be a flag key (1-256 characters), got %q", u.flag)
	}
	if v := q.Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > usage.MaxDays {
			return u, fieldErr(CodeBadRequest, "days", "days must be a whole number from 1 to %d, got %q", usage.MaxDays, v)
		}
		u.days = n
	}
	if v := q.Get("granularity"); v != "" {
		g, err := usage.ParseGranularity(v)
		if err != nil {
			return u, fieldErr(CodeBadRequest, "granularity", "granularity must be minute, hour or day, got %q", v)
		}
		u.gran, u.series = g, true
		u.since = now.Add(-defaultSince[g])
	}
	if v := q.Get("since"); v != "" {
		if !u.series {
			return u, fieldErr(CodeBadRequest, "since", "since selects where a series starts: add granularity=minute, hour or day")
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			d, derr := time.ParseDuration(v)
			if derr != nil || d <= 0 {
				return u, fieldErr(CodeBadRequest, "since", "since must be an RFC 3339 time (2026-11-29T10:00:00Z) or a positive duration back from now (90m, 24h), got %q", v)
			}
			t = now.Add(-d)
		}
		if t.After(now) {
			return u, fieldErr(CodeBadRequest, "since", "since %s is in the future", t.UTC().Format(time.RFC3339))
		}
		if oldest := now.Add(-u.gran.Retention()); t.Before(oldest) {
			return u, fieldErr(CodeBadRequest, "since", "%s rollups are kept for %s: since must be after %s", u.gran, u.gran.Retention(), oldest.UTC().Format(time.RFC3339))
		}
		if n := now.Sub(t) / u.gran.Step(); n >= usage.MaxPoints {
			return u, fieldErr(CodeBadRequest, "since", "a series has at most %d points: with granularity %s, since must be within %s", usage.MaxPoints, u.gran, time.Duration(usage.MaxPoints-1)*u.gran.Step())
		}
		u.since = t
	}
	return u, nil
}

func (s *Server) envUsage(w http.ResponseWriter, r *http.Request, _ principal) error {
	if s.o.Usage == nil {
		return newErr(CodeNotConfigured, "this control plane does not aggregate usage (Options.Usage)")
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	now := time.Now().UTC()
	q, err := parseUsageQuery(r, now)
	if err != nil {
		return err
	}
	out := map[string]any{"env": env, "time": now}
	if q.flag != "" {
		all, err := s.o.Usage.FlagUsage(env, q.days)
		if err != nil {
			return err
		}
		fu, ok := all[q.flag]
		if !ok && q.days > 0 { // never evaluated within the retention: zero days
			fu = zeroDays(q.days)
		}
		out["flag"] = q.flag
		out["usage"] = fu
	} else {
		// One read, so the totals add up to the flags' counts.
		out["flags"], out["totals24h"] = s.o.Usage.Overview(env)
	}
	if q.series {
		pts, err := s.o.Usage.Series(r.Context(), env, q.flag, q.gran, q.since)
		if err != nil {
			return err
		}
		out["granularity"] = q.gran.String()
		out["series"] = pts
	}
	return writeJSON(w, http.StatusOK, out)
}

// zeroDays is a flag's usage when nothing was counted for it: every day
// present with zero evaluations, as FlagUsage.Days promises.
func zeroDays(days int) usage.FlagUsage {
	today := time.Now().UTC().Truncate(24 * time.Hour)
	fu := usage.FlagUsage{Days: make([]usage.FlagDay, days)}
	for i := range fu.Days {
		fu.Days[i].Day = today.Add(-time.Duration(days-1-i) * 24 * time.Hour)
	}
	return fu
}

func (s *Server) envAnomalies(w http.ResponseWriter, r *http.Request, _ principal) error {
	if s.o.Usage == nil {
		return newErr(CodeNotConfigured, "this control plane does not aggregate usage (Options.Usage), so it detects no anomalies")
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	if len(r.URL.Query()) > 0 {
		for k := range r.URL.Query() {
			return fieldErr(CodeBadRequest, k, "unknown query parameter %q; this route reads none", k)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"anomalies": s.o.Usage.Anomalies(env)})
}
