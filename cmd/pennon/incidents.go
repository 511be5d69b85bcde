package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/proxy"
	flagsync "github.com/pennon-dev/pennon/sync"
)

func init() {
	register(command{name: "incidents", summary: "list incident records (degradations and how they ended), newest first", run: runIncidents})
}

// openIncidents opens the control plane's incident ledger: it follows the
// incidents telemetry stream and keeps records in a KV bucket.
func openIncidents(ctx context.Context, rs *runningServer, js jetstream.JetStream, o serverOptions, log *zap.Logger, reg prometheus.Registerer) (*ledger.Ledger, error) {
	led, err := ledger.Open(ctx, ledger.Options{Ingest: rs.Telemetry, JetStream: js, Replicas: o.replicas, Notify: rs.Notify, Logger: log, Metrics: reg})
	if err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	return led, nil
}

// sidecarIncidents builds the sidecar's incident recorder and attaches it
// to sync and to the OFREP server; nil in file mode (no control plane to
// report to).
func sidecarIncidents(srv *proxy.Server, src proxy.Source, log *zap.Logger) *incident.Recorder {
	r, ok := src.(*flagsync.Remote)
	if !ok {
		return nil
	}
	rec, err := incident.NewRecorder(incident.RecorderOptions{Env: r.Env(), Source: r.ID(), PushExpected: r.PushConfigured(),
		Load: srv.IncidentLoad, Errors: srv.IncidentErrors, Sync: r.IncidentConditions, Logger: log})
	if err != nil {
		log.Warn("incident records disabled", zap.Error(err))
		return nil
	}
	r.SetIncidents(rec)
	srv.SetIncidents(rec)
	return rec
}

func runIncidents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("incidents", "pennon incidents [--env E] [--status open|recovered|superseded] [--limit N] [--json]",
		"List incident records newest first, one summary line each: what degraded (push lost, breaker open, fail-mode answers, fallback targeting, cache bypass, signature rejections, the control plane's NATS or store), when, which fallbacks served how many answers and whether it recovered. Without --env: every environment the token can see.", stderr)
	status := fs.String("status", "", "only records in this status: open, recovered or superseded")
	limit := fs.Int("limit", 100, "at most this many records (1-1000)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("incidents", pos); err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return usagef("--limit must be from 1 to 1000, got %d", *limit)
	}
	switch *status {
	case "", incident.StatusOpen, incident.StatusRecovered, incident.StatusSuperseded:
	default:
		return usagef("--status must be open, recovered or superseded, got %q", *status)
	}
	envSet := false
	fs.Visit(func(f *flag.Flag) { envSet = envSet || f.Name == "env" })
	path := "/api/v1/incidents"
	if envSet {
		path = envPath(c.env, "/incidents")
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *status != "" {
		q.Set("status", *status)
	}
	c.out = stdout
	raw, _, err := c.call(ctx, "GET", path, nil, q)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var out struct {
			Incidents []struct {
				incident.Record
				Summary string `json:"summary"`
			} `json:"incidents"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("incidents: unexpected answer: %w", err)
		}
		if len(out.Incidents) == 0 {
			_, err := fmt.Fprintln(w, "no incidents")
			return err
		}
		t := newTable(w, "start", "env", "source", "summary")
		for _, it := range out.Incidents {
			env := it.Env
			if env == "" {
				env = "(control plane)"
			}
			t.row(it.Start.UTC().Format(time.RFC3339), env, it.Source, it.Summary)
		}
		return t.flush()
	})
}
