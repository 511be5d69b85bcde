package control

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/notify"
)

// eventRoutes list an environment's recent events (changes, approvals
// needed, emergencies, out-of-hours changes, rewinds, anomalies, lifecycle
// findings, incidents), newest first.
func (s *Server) eventRoutes() {
	s.route("GET /api/v1/envs/{env}/events", "events.list", RoleViewer, s.listEvents)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request, _ principal) error {
	d, err := s.notifier()
	if err != nil {
		return err
	}
	limit, err := queryLimit(r, 50, 500)
	if err != nil {
		return err
	}
	typ := r.URL.Query().Get("type")
	if typ != "" && !validEventType(typ) {
		return fieldErr(CodeBadRequest, "type", "type %q: allowed %s", typ, strings.Join(notify.Types, ", "))
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	// A type filter reads the whole retained list, then keeps limit.
	n := limit
	if typ != "" {
		n = notify.DefaultEventsPerEnv
	}
	list, err := d.Events(r.Context(), env, n)
	if err != nil {
		return err
	}
	if typ != "" {
		kept := []notify.Event{}
		for _, e := range list {
			if e.Type == typ && len(kept) < limit {
				kept = append(kept, e)
			}
		}
		list = kept
	}
	return writeJSON(w, 200, map[string]any{"events": list})
}

func validEventType(t string) bool {
	for _, k := range notify.Types {
		if k == t {
			return true
		}
	}
	return false
}

// emitter is where the control plane's events go (notify.Discard without
// a dispatcher).
func (s *Server) emitter() notify.Emitter {
	if s.o.Notify == nil {
		return notify.Discard
	}
	return s.o.Notify
}

// notifyCommitted emits the events of a committed changeset: always a
// change; an emergency when it bypassed review; out_of_hours when the
// environment has business hours and the commit time is outside them. IDs
// derive from (env, version) so a receiver can de-duplicate. It never
// fails the commit: the settings read for business hours is bounded and its
// failure only skips that check.
func (s *Server) notifyCommitted(ctx context.Context, cs *config.Changeset) {
	em := s.emitter()
	if em == notify.Discard {
		return
	}
	flags := make([]string, len(cs.Changes))
	for i, c := range cs.Changes {
		flags[i] = c.Flag
	}
	data := map[string]any{"version": cs.Version, "author": cs.Author, "reason": cs.Reason, "flags": flags}
	var extra []string
	if cs.Emergency {
		data["emergency"] = true
	}
	if cs.ChangeRequest != "" {
		data["changeRequest"] = cs.ChangeRequest
		extra = append(extra, "change request "+cs.ChangeRequest)
	}
	if cs.RollbackTo > 0 {
		data["rollbackTo"] = cs.RollbackTo
		extra = append(extra, fmt.Sprintf("rollback to %d", cs.RollbackTo))
	}
	if cs.PromotedFrom != "" {
		data["promotedFrom"] = cs.PromotedFrom
		extra = append(extra, "promoted from "+cs.PromotedFrom)
	}
	flag := ""
	if len(flags) == 1 {
		flag = flags[0]
	}
	what := describeFlags(flags)
	text := "reason: " + cs.Reason
	if len(extra) > 0 {
		text += " (" + strings.Join(extra, ", ") + ")"
	}
	key := fmt.Sprintf("%s-%d", cs.Env, cs.Version)
	em.Emit(ctx, notify.Event{ID: "change-" + key, Type: notify.TypeChange, Env: cs.Env, Time: cs.Time, Severity: notify.SeverityInfo,
		Title: fmt.Sprintf("%s v%d: %s by %s", cs.Env, cs.Version, what, cs.Author), Text: text, Flag: flag, Data: data})
	if cs.Emergency {
		em.Emit(ctx, notify.Event{ID: "emergency-" + key, Type: notify.TypeEmergency, Env: cs.Env, Time: cs.Time, Severity: notify.SeverityCritical,
			Title: fmt.Sprintf("%s v%d: emergency change (no review) of %s by %s", cs.Env, cs.Version, what, cs.Author),
			Text:  text + "; review it with POST /api/v1/envs/" + cs.Env + fmt.Sprintf("/changesets/%d/review", cs.Version), Flag: flag, Data: data})
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	env, err := s.o.Store.Env(sctx, cs.Env)
	if err != nil || env.BusinessHours == nil || env.BusinessHours.Contains(cs.Time) {
		return
	}
	bh := env.BusinessHours
	ood := map[string]any{"businessHours": fmt.Sprintf("%s %s-%s %s", bh.Days, bh.From, bh.To, bh.TZ)}
	for k, v := range data {
		ood[k] = v
	}
	em.Emit(ctx, notify.Event{ID: "out_of_hours-" + key, Type: notify.TypeOutOfHours, Env: cs.Env, Time: cs.Time, Severity: notify.SeverityWarning,
		Title: fmt.Sprintf("%s v%d: %s by %s outside business hours (%s %s-%s %s)", cs.Env, cs.Version, what, cs.Author, bh.Days, bh.From, bh.To, bh.TZ),
		Text:  text, Flag: flag, Data: ood})
}

// notifyChangeRequest emits approval_needed for a change request just opened.
func (s *Server) notifyChangeRequest(ctx context.Context, cr *ChangeRequest) {
	flags := make([]string, len(cr.Changes))
	for i, c := range cr.Changes {
		flags[i] = c.Flag
	}
	flag := ""
	if len(flags) == 1 {
		flag = flags[0]
	}
	s.emitter().Emit(ctx, notify.Event{ID: "approval_needed-" + cr.Env + "-" + cr.ID, Type: notify.TypeApprovalNeeded, Env: cr.Env, Time: cr.CreatedAt,
		Severity: notify.SeverityInfo, Flag: flag,
		Title: fmt.Sprintf("%s: change request %s by %s waits for an approver (%s)", cr.Env, cr.ID, cr.Author, describeFlags(flags)),
		Text:  "reason: " + cr.Reason + "; approve with POST /api/v1/envs/" + cr.Env + "/change-requests/" + cr.ID + "/approve",
		Data:  map[string]any{"changeRequest": cr.ID, "author": cr.Author, "reason": cr.Reason, "flags": flags}})
}

// describeFlags names up to three flags ("checkout", "a, b and 3 more").
func describeFlags(flags []string) string {
	switch {
	case len(flags) == 0:
		return "metadata changed"
	case len(flags) <= 3:
		return strings.Join(flags, ", ")
	default:
		return fmt.Sprintf("%s and %d more", strings.Join(flags[:3], ", "), len(flags)-3)
	}
}
