package control

import (
	"errors"
	"net/http"

	"github.com/pennon-dev/pennon/notify"
)

// webhookRoutes manage an environment's webhooks. They need the admin role
// in the environment because a webhook makes the control plane send
// requests to a URL of the caller's choosing (see docs/notify.md, "SSRF").
func (s *Server) webhookRoutes() {
	s.route("GET /api/v1/envs/{env}/webhooks", "webhooks.list", RoleAdmin, s.listWebhooks)
	s.route("POST /api/v1/envs/{env}/webhooks", "webhooks.create", RoleAdmin, s.createWebhook)
	s.route("DELETE /api/v1/envs/{env}/webhooks/{id}", "webhooks.delete", RoleAdmin, s.deleteWebhook)
	s.route("GET /api/v1/envs/{env}/webhooks/{id}/deliveries", "webhooks.deliveries", RoleAdmin, s.webhookDeliveries)
}

// notifier is the dispatcher, or a 501 naming what to configure.
func (s *Server) notifier() (*notify.Dispatcher, error) {
	if s.o.Notify == nil {
		return nil, newErr(CodeNotConfigured, "notifications are not enabled on this control plane (Options.Notify)")
	}
	return s.o.Notify, nil
}

// webhookErr maps the dispatcher's typed errors to the catalogue.
func webhookErr(err error) error {
	var fe *notify.FieldError
	switch {
	case errors.As(err, &fe):
		return fieldErr(CodeValidation, fe.Field, "%s", fe.Error())
	case errors.Is(err, notify.ErrWebhookNotFound):
		return fieldErr(CodeNotFound, "id", "webhook not found in this environment; list them with GET .../webhooks")
	}
	return err
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, _ principal) error {
	d, err := s.notifier()
	if err != nil {
		return err
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	list, err := d.Webhooks(r.Context(), env)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"webhooks": list})
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, p principal) error {
	d, err := s.notifier()
	if err != nil {
		return err
	}
	var spec notify.WebhookSpec
	if err := decodeBody(r, &spec); err != nil {
		return err
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	secret, info, err := d.CreateWebhook(r.Context(), env, spec, p.actor())
	if err != nil {
		return webhookErr(err)
	}
	s.record(r.Context(), p, "webhook.create", env, info.ID, "created", map[string]any{"url": info.URL, "types": info.Types, "format": info.Format})
	return writeJSON(w, http.StatusCreated, map[string]any{"webhook": info, "secret": secret,
		"note": "the secret is shown once: verify the " + notify.SignatureHeader + " header of each delivery with it (docs/notify.md)"})
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, p principal) error {
	d, err := s.notifier()
	if err != nil {
		return err
	}
	env, id := r.PathValue("env"), r.PathValue("id")
	if err := d.DeleteWebhook(r.Context(), env, id, p.actor()); err != nil {
		return webhookErr(err)
	}
	s.record(r.Context(), p, "webhook.delete", env, id, "deleted", nil)
	return writeJSON(w, 200, map[string]any{"deleted": id})
}

func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request, _ principal) error {
	d, err := s.notifier()
	if err != nil {
		return err
	}
	limit, err := queryLimit(r, 20, 200)
	if err != nil {
		return err
	}
	env, id := r.PathValue("env"), r.PathValue("id")
	list, err := d.Deliveries(r.Context(), env, id, limit)
	if err != nil {
		return webhookErr(err)
	}
	return writeJSON(w, 200, map[string]any{"webhook": id, "deliveries": list})
}

// queryLimit reads ?limit= (default def, at most most).
func queryLimit(r *http.Request, def, most int) (int, error) {
	n, err := queryUint(r, "limit")
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return def, nil
	}
	if n > uint64(most) {
		return 0, fieldErr(CodeBadRequest, "limit", "query limit=%d: at most %d", n, most)
	}
	return int(n), nil
}
