package notify

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// CreateWebhook validates spec and stores a webhook for env with a new
// signing secret. The secret is returned here and never again; nothing logs
// it. Validation failures are *FieldError.
func (d *Dispatcher) CreateWebhook(ctx context.Context, env string, spec WebhookSpec, by string) (secret string, info WebhookInfo, err error) {
	if err := checkSpec(&spec); err != nil {
		return "", WebhookInfo{}, err
	}
	secret, err = newSecret()
	if err != nil {
		return "", WebhookInfo{}, err
	}
	w := Webhook{ID: newID(), Env: env, URL: spec.URL, Types: spec.Types, Format: spec.Format, Description: spec.Description,
		CreatedAt: time.Now().UTC(), CreatedBy: by, Secret: secret}
	if err := d.hooks.create(ctx, w); err != nil {
		return "", WebhookInfo{}, err
	}
	d.forget(env)
	d.log.Info("webhook created", zap.String("env", env), zap.String("webhook", w.ID), zap.String("url", RedactURL(w.URL)), zap.String("by", by))
	return secret, w.Info(), nil
}

// Webhooks lists env's webhooks (secrets omitted, URLs redacted).
func (d *Dispatcher) Webhooks(ctx context.Context, env string) ([]WebhookInfo, error) {
	list, err := d.hooks.list(ctx, env)
	if err != nil {
		return nil, err
	}
	out := make([]WebhookInfo, len(list))
	for i, w := range list {
		out[i] = w.Info()
	}
	return out, nil
}

// Webhook is one of env's webhooks (secret omitted, URL redacted).
func (d *Dispatcher) Webhook(ctx context.Context, env, id string) (WebhookInfo, error) {
	w, err := d.hooks.get(ctx, env, id)
	if err != nil {
		return WebhookInfo{}, err
	}
	return w.Info(), nil
}

// DeleteWebhook removes a webhook; its queued deliveries are abandoned.
func (d *Dispatcher) DeleteWebhook(ctx context.Context, env, id, by string) error {
	if err := d.hooks.delete(ctx, env, id); err != nil {
		return err
	}
	d.mu.Lock()
	if w, ok := d.workers[webhookKey(env, id)]; ok {
		w.retire()
		delete(d.workers, webhookKey(env, id))
	}
	d.mu.Unlock()
	d.forget(env)
	d.log.Info("webhook deleted", zap.String("env", env), zap.String("webhook", id), zap.String("by", by))
	return nil
}

// Deliveries are the webhook's most recent deliveries on this control-plane
// replica, newest first, at most limit.
func (d *Dispatcher) Deliveries(ctx context.Context, env, id string, limit int) ([]Delivery, error) {
	if _, err := d.hooks.get(ctx, env, id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	w := d.workers[webhookKey(env, id)]
	d.mu.Unlock()
	if w == nil {
		return []Delivery{}, nil
	}
	return w.deliveries(limit), nil
}

// Events are env's most recent events, newest first, at most limit.
func (d *Dispatcher) Events(ctx context.Context, env string, limit int) ([]Event, error) {
	return d.events.list(ctx, env, limit)
}

// forget drops the cached webhook list of env so the next event reads it.
func (d *Dispatcher) forget(env string) {
	d.mu.Lock()
	delete(d.cache, env)
	d.mu.Unlock()
}
