package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/telemetry"
)

// send stores one incidents batch of sidecar through the real ingest.
func send(t *testing.T, ing *telemetry.Ingest, sidecar, boot string, seq uint64, recs ...incident.Record) {
	t.Helper()
	data, _ := json.Marshal(incident.Payload{Boot: boot, Records: recs})
	now := time.Now().UTC()
	if err := ing.Accept(context.Background(), telemetry.Batch{Kind: telemetry.KindIncidents, Env: "dev", Sidecar: sidecar, Boot: boot, Seq: seq,
		From: now, To: now, Data: data}, "http"); err != nil {
		t.Fatal(err)
	}
}

func closed(id, kind string, start time.Time) incident.Record {
	end := start.Add(time.Second)
	return incident.Record{ID: id, Rev: 1, Kind: kind, Status: incident.StatusRecovered, Recovered: true, Start: start, End: &end, Updated: end}
}

// What sidecars send is checked and bounded: a record naming another
// sidecar is refused, a resend with a lower rev changes nothing, a late
// resend of a superseded record does not reopen it, and beyond MaxRecords
// the oldest closed records leave memory.
func TestLedgerRules(t *testing.T) {
	ns := natsrun.StartTest(t)
	js, _ := jetstream.New(natsrun.ConnectTest(t, ns))
	ing, err := telemetry.OpenIngest(context.Background(), js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	reg := prometheus.NewRegistry()
	led, err := ledger.Open(context.Background(), ledger.Options{Ingest: ing, JetStream: js, MaxRecords: 10, Notify: ev, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	const boot1, boot2 = "00000000000000a1", "00000000000000b2"
	open := incident.Record{ID: "pod-a/" + boot1 + "/1", Rev: 2, Kind: incident.KindPushLost, Status: incident.StatusOpen, Start: t0, Updated: t0.Add(5 * time.Second)}
	send(t, ing, "pod-a", boot1, 1, open,
		closed("pod-b/"+boot1+"/1", incident.KindBreakerOpen, t0)) // not pod-a's to send
	stale := open
	stale.Rev, stale.Status = 1, incident.StatusRecovered
	send(t, ing, "pod-a", boot1, 2, stale)
	send(t, ing, "pod-a", boot2, 1) // a new boot: the open record is superseded
	late := open
	late.Rev = 3
	send(t, ing, "pod-a", boot1, 3, late)
	// The pod-b record was refused; the late resend does not reopen it.
	send(t, ing, "pod-a", boot1, 4, closed("pod-a/"+boot1+"/9", incident.KindCacheBypass, t0))
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(led.List(ledger.Filter{Limit: 1000})) != 2 {
			return fmt.Errorf("records %+v", led.List(ledger.Filter{Limit: 1000}))
		}
		return nil
	})
	var gotA *incident.Record
	for _, r := range led.List(ledger.Filter{Limit: 1000}) {
		if r.Source == "pod-b" {
			t.Fatalf("pod-a spoke for pod-b: %+v", r)
		}
		if r.ID == open.ID {
			gotA = &r
		}
	}
	if gotA == nil || gotA.Status != incident.StatusSuperseded || gotA.Recovered || gotA.End == nil || !gotA.End.Equal(open.Updated) || gotA.Env != "dev" || gotA.Source != "pod-a" {
		t.Fatalf("pod-a's record: %+v", gotA)
	}
	send(t, ing, "pod-d", boot1, 1, incident.Record{ID: "pod-d/" + boot1 + "/1", Rev: 1, Kind: incident.KindBreakerOpen, Status: incident.StatusOpen, Start: t0, Updated: t0})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		want := `
# HELP pennon_incidents_open Incident records open now, by environment (empty: the control plane's own) and kind.
# TYPE pennon_incidents_open gauge
pennon_incidents_open{env="dev",kind="breaker_open"} 1
`
		return testutil.GatherAndCompare(reg, strings.NewReader(want), "pennon_incidents_open")
	})
	if ids := ev.ids(); len(ids) < 2 || ids[0] != "incident/"+open.ID+"/opened" || ids[1] != "incident/"+open.ID+"/closed" {
		t.Fatalf("events %v: want the record opened, then closed when superseded", ids)
	}
	if got := led.List(ledger.Filter{Status: incident.StatusSuperseded}); len(got) != 1 || got[0].ID != open.ID {
		t.Fatalf("status filter: %+v", got)
	}
	if got := led.List(ledger.Filter{Visible: func(env string) bool { return env == "prod" }}); len(got) != 0 {
		t.Fatalf("visibility filter: %+v", got)
	}
	for i := range 20 {
		send(t, ing, "pod-c", boot1, uint64(i+1), closed(fmt.Sprintf("pod-c/%s/%d", boot1, i), incident.KindFailMode, t0.Add(time.Duration(i)*time.Minute)))
	}
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, r := range led.List(ledger.Filter{Limit: 1000}) {
			if r.ID == "pod-c/"+boot1+"/19" {
				return nil
			}
		}
		return fmt.Errorf("last batch not applied yet")
	})
	all := led.List(ledger.Filter{Limit: 1000})
	podC := 0
	for _, r := range all {
		if r.Source == "pod-c" {
			podC++
		}
	}
	if len(all) > 10 || podC < 8 || all[0].ID != "pod-c/"+boot1+"/19" {
		t.Fatalf("bounds: %d records, %d of pod-c, newest %s", len(all), podC, all[0].ID)
	}
}
