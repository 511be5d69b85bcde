package notify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WebhooksBucket is the JetStream KV bucket holding webhooks, key
// "<env>.<id>". It holds each webhook's signing secret: like every other
// bucket it is reachable only with the control plane's NATS identity.
const WebhooksBucket = "pennon-webhooks"

// Formats of a delivery body.
const (
	FormatJSON  = "json"  // the Event as JSON
	FormatSlack = "slack" // {"text": "..."}, what Slack incoming webhooks read
)

// Types lists every event type, for filters and documentation.
var Types = []string{TypeChange, TypeApprovalNeeded, TypeEmergency, TypeOutOfHours, TypeRewind, TypeAnomaly, TypeLifecycle, TypeIncident}

// ErrWebhookNotFound: no webhook with that ID in that environment.
var ErrWebhookNotFound = errors.New("webhook not found")

// FieldError is a webhook definition refused because of one field; Field is
// its JSON name, Msg says what is accepted.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// WebhookSpec is what an administrator sends to create a webhook.
type WebhookSpec struct {
	URL string `json:"url"`
	// Types filters events by type; empty means every type.
	Types []string `json:"types,omitempty"`
	// Format is "json" (default) or "slack".
	Format      string `json:"format,omitempty"`
	Description string `json:"description,omitempty"`
}

// Webhook is a stored webhook. Secret is never part of any answer after the
// creation one: use Info for everything shown.
type Webhook struct {
	ID          string    `json:"id"`
	Env         string    `json:"env"`
	URL         string    `json:"url"`
	Types       []string  `json:"types,omitempty"`
	Format      string    `json:"format"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	CreatedBy   string    `json:"createdBy,omitempty"`
	Secret      string    `json:"secret"`
}

// WebhookInfo is a webhook as listed: without its secret, and with its URL
// redacted, because Slack-style URLs carry a credential in their path.
type WebhookInfo struct {
	ID          string    `json:"id"`
	Env         string    `json:"env"`
	URL         string    `json:"url"`
	Types       []string  `json:"types"`
	Format      string    `json:"format"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	CreatedBy   string    `json:"createdBy,omitempty"`
}

// Info is w as shown after creation.
func (w Webhook) Info() WebhookInfo {
	types := w.Types
	if types == nil {
		types = []string{}
	}
	return WebhookInfo{ID: w.ID, Env: w.Env, URL: RedactURL(w.URL), Types: types, Format: w.Format,
		Description: w.Description, CreatedAt: w.CreatedAt, CreatedBy: w.CreatedBy}
}

// wants reports whether the webhook's filter accepts an event type.
func (w Webhook) wants(typ string) bool {
	return len(w.Types) == 0 || slices.Contains(w.Types, typ)
}

// RedactURL keeps the scheme, the host and the first path segment of u and
// replaces the rest (further segments, query) with "…": enough to recognise
// a receiver, not enough to call it.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "…"
	}
	out := p.Scheme + "://" + p.Host
	path := strings.TrimPrefix(p.EscapedPath(), "/")
	first, rest, more := strings.Cut(path, "/")
	if first != "" {
		out += "/" + first
	}
	if (more && rest != "") || p.RawQuery != "" {
		out += "/…"
	}
	return out
}

// checkSpec validates a webhook definition and fills its defaults.
func checkSpec(s *WebhookSpec) error {
	s.URL = strings.TrimSpace(s.URL)
	if s.URL == "" {
		return &FieldError{"url", "required: the http or https URL events are POSTed to"}
	}
	if len(s.URL) > 2048 {
		return &FieldError{"url", "longer than 2048 characters"}
	}
	u, err := url.Parse(s.URL)
	switch {
	case err != nil:
		return &FieldError{"url", fmt.Sprintf("not a URL: %v", err)}
	case u.Scheme != "http" && u.Scheme != "https":
		return &FieldError{"url", fmt.Sprintf("scheme %q: only http and https are allowed", u.Scheme)}
	case u.Host == "" || u.Hostname() == "":
		return &FieldError{"url", "needs a host, e.g. https://hooks.example.com/pennon"}
	case u.User != nil:
		return &FieldError{"url", "must not carry credentials (user:password@); the receiver verifies the Pennon-Signature header instead"}
	case u.Fragment != "":
		return &FieldError{"url", "must not have a #fragment"}
	}
	switch s.Format {
	case "":
		s.Format = FormatJSON
	case FormatJSON, FormatSlack:
	default:
		return &FieldError{"format", fmt.Sprintf("%q: allowed json, slack", s.Format)}
	}
	seen := map[string]bool{}
	var types []string
	for i, t := range s.Types {
		if !slices.Contains(Types, t) {
			return &FieldError{fmt.Sprintf("types[%d]", i), fmt.Sprintf("%q: allowed %s", t, strings.Join(Types, ", "))}
		}
		if !seen[t] {
			seen[t] = true
			types = append(types, t)
		}
	}
	sort.Strings(types)
	s.Types = types
	if len(s.Description) > 256 {
		return &FieldError{"description", "longer than 256 characters"}
	}
	return nil
}

// newSecret is 32 random bytes, prefixed so a leaked one is recognisable.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b), nil
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func webhookKey(env, id string) string { return env + "." + id }

// webhookStore keeps webhooks in JetStream KV.
type webhookStore struct{ kv jetstream.KeyValue }

func openWebhookStore(ctx context.Context, js jetstream.JetStream, replicas int) (*webhookStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: WebhooksBucket, Replicas: max(replicas, 1), History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("webhooks bucket: %w", err)
	}
	return &webhookStore{kv: kv}, nil
}

func (s *webhookStore) create(ctx context.Context, w Webhook) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	_, err = s.kv.Create(ctx, webhookKey(w.Env, w.ID), b)
	return err
}

func (s *webhookStore) get(ctx context.Context, env, id string) (Webhook, error) {
	var w Webhook
	ent, err := s.kv.Get(ctx, webhookKey(env, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
		return w, ErrWebhookNotFound
	}
	if err != nil {
		return w, fmt.Errorf("webhook %s: %w", id, err)
	}
	if err := json.Unmarshal(ent.Value(), &w); err != nil {
		return w, fmt.Errorf("webhook %s: unreadable record: %w", id, err)
	}
	return w, nil
}

func (s *webhookStore) delete(ctx context.Context, env, id string) error {
	if _, err := s.get(ctx, env, id); err != nil {
		return err
	}
	return s.kv.Delete(ctx, webhookKey(env, id))
}

// list returns env's webhooks, oldest first.
func (s *webhookStore) list(ctx context.Context, env string) ([]Webhook, error) {
	kl, err := s.kv.ListKeysFiltered(ctx, env+".*")
	if err != nil {
		return nil, fmt.Errorf("webhooks of %s: %w", env, err)
	}
	out := []Webhook{}
	for k := range kl.Keys() {
		w, err := s.get(ctx, env, strings.TrimPrefix(k, env+"."))
		if errors.Is(err, ErrWebhookNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
