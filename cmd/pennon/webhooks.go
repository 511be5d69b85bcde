package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/pennon-dev/pennon/notify"
)

func init() {
	register(command{name: "webhooks", summary: "list, add or remove an environment's webhooks, and see their deliveries", run: runWebhooks})
	register(command{name: "events", summary: "an environment's recent events (changes, approvals needed, anomalies, incidents, ...)", run: runEvents})
}

func runWebhooks(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("webhooks", "pennon webhooks list | add URL [--types change,emergency] [--format json|slack] [--description D] | remove ID | deliveries ID [--limit N]",
		"Manage the environment's webhooks (admin). Each delivery is signed with the webhook's secret, shown once by add (docs/notify.md).", stderr)
	var types listFlag
	fs.Var(&types, "types", "add: event types to send (comma-separated; default all): "+fmt.Sprint(notify.Types))
	format := fs.String("format", "json", "add: json (the event) or slack ({\"text\": ...})")
	desc := fs.String("description", "", "add: what the webhook is for")
	limit := fs.Int("limit", 20, "deliveries: how many, newest first (at most 200)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	base := "/api/v1/envs/" + url.PathEscape(c.env) + "/webhooks"
	return dispatch("webhooks", fs, adminCommon, []verb{
		{name: "list", run: func([]string) error {
			raw, _, err := c.call(ctx, "GET", base, nil, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct{ Webhooks []notify.WebhookInfo }
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("webhooks list: unexpected answer: %w", err)
				}
				t := newTable(w, "id", "format", "types", "url", "description", "created")
				for _, h := range out.Webhooks {
					types := any(h.Types)
					if len(h.Types) == 0 {
						types = "all"
					}
					t.row(h.ID, h.Format, types, h.URL, h.Description, h.CreatedAt.UTC().Format(time.RFC3339))
				}
				return t.flush()
			})
		}},
		{name: "add", args: []string{"URL"}, flags: []string{"types", "format", "description"}, run: func(a []string) error {
			raw, _, err := c.call(ctx, "POST", base, notify.WebhookSpec{URL: a[0], Types: types, Format: *format, Description: *desc}, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct {
					Webhook notify.WebhookInfo
					Secret  string
				}
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("webhooks add: unexpected answer: %w", err)
				}
				types := any(out.Webhook.Types)
				if len(out.Webhook.Types) == 0 {
					types = "all"
				}
				if err := fields(w, "created webhook", out.Webhook.ID, "env", out.Webhook.Env, "url", out.Webhook.URL, "format", out.Webhook.Format, "types", types); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "secret (shown once; verify each delivery's %s header with it):\n%s\n", notify.SignatureHeader, out.Secret)
				return err
			})
		}},
		{name: "remove", args: []string{"ID"}, run: func(a []string) error {
			raw, _, err := c.call(ctx, "DELETE", base+"/"+url.PathEscape(a[0]), nil, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "removed webhook %s: nothing more is sent to it\n", a[0])
				return err
			})
		}},
		{name: "deliveries", args: []string{"ID"}, flags: []string{"limit"}, run: func(a []string) error {
			if *limit < 1 || *limit > 200 {
				return usagef("--limit %d: want 1 to 200", *limit)
			}
			raw, _, err := c.call(ctx, "GET", base+"/"+url.PathEscape(a[0])+"/deliveries", nil, url.Values{"limit": {strconv.Itoa(*limit)}})
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct{ Deliveries []notify.Delivery }
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("webhooks deliveries: unexpected answer: %w", err)
				}
				t := newTable(w, "event", "type", "state", "attempts", "status", "error", "next retry")
				for _, d := range out.Deliveries {
					var status, next any
					if d.StatusCode != 0 {
						status = d.StatusCode
					}
					if d.NextRetryAt != nil {
						next = d.NextRetryAt.UTC().Format(time.RFC3339)
					}
					t.row(d.EventID, d.EventType, d.State, d.Attempts, status, d.Error, next)
				}
				return t.flush()
			})
		}},
	}, pos)
}

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("events", "pennon events [--type T] [--limit N] [--env E]", "An environment's recent events, newest first: what its webhooks were sent.", stderr)
	typ := fs.String("type", "", "only events of this type: "+fmt.Sprint(notify.Types))
	limit := fs.Int("limit", 50, "how many, newest first (at most 500)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("events", pos); err != nil {
		return err
	}
	if *limit < 1 || *limit > 500 {
		return usagef("--limit %d: want 1 to 500", *limit)
	}
	c.out = stdout
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *typ != "" {
		q.Set("type", *typ)
	}
	raw, _, err := c.call(ctx, "GET", "/api/v1/envs/"+url.PathEscape(c.env)+"/events", nil, q)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var out struct{ Events []notify.Event }
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("events: unexpected answer: %w", err)
		}
		t := newTable(w, "time", "type", "severity", "title")
		for _, e := range out.Events {
			t.row(e.Time.UTC().Format(time.RFC3339), e.Type, e.Severity, e.Title)
		}
		return t.flush()
	})
}
