package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/telemetry"
)

// postIncidents sends crafted incident batches from a sidecar "pod-a"
// through the API path sidecars use while NATS is down (its first boot
// left a fail-mode record open; its second boot reports a recovered
// outage and breaker), then waits until `pennon incidents` lists all three.
func postIncidents(server, admin string) func(t *testing.T, _ map[string]string) {
	return func(t *testing.T, _ map[string]string) {
		t.Helper()
		at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
		end := func(s string) *time.Time { v := at(s); return &v }
		const oldBoot, newBoot = "00000000deadbeef", "0123456789abcdef"
		batches := []struct {
			boot string
			recs []incident.Record
		}{
			{oldBoot, []incident.Record{{ID: "pod-a/" + oldBoot + "/1", Rev: 3, Kind: incident.KindFailMode, Boot: oldBoot, Status: incident.StatusOpen,
				Start: at("2026-11-20T09:00:00Z"), Updated: at("2026-11-20T09:00:20Z"), Reason: "freshness could not be established",
				Fallbacks: []incident.Fallback{{Name: incident.FallbackFailClosed, Since: at("2026-11-20T09:00:00Z"), Answers: 31}}}}},
			{newBoot, []incident.Record{
				{ID: "pod-a/" + newBoot + "/1", Rev: 4, Kind: incident.KindPushLost, Boot: newBoot, Status: incident.StatusRecovered, Recovered: true,
					Start: at("2026-11-20T10:00:00Z"), End: end("2026-11-20T10:00:42Z"), Updated: at("2026-11-20T10:00:42Z"), Reason: "NATS disconnected",
					AtStart:   incident.Conditions{Version: 3, State: "polling"},
					Fallbacks: []incident.Fallback{{Name: incident.FallbackPolling, Answers: 1200}, {Name: incident.FallbackFailClosed, Answers: 7}}},
				{ID: "pod-a/" + newBoot + "/2", Rev: 2, Kind: incident.KindBreakerOpen, Boot: newBoot, Status: incident.StatusRecovered, Recovered: true,
					Start: at("2026-11-20T10:00:05Z"), End: end("2026-11-20T10:00:30Z"), Updated: at("2026-11-20T10:00:30Z"), Count: 3,
					Reason: "dial tcp 10.0.0.1:8080: connect: connection refused", Fallbacks: []incident.Fallback{}},
			}},
		}
		for _, b := range batches {
			data, _ := json.Marshal(incident.Payload{Boot: b.boot, Records: b.recs})
			body, _ := json.Marshal(telemetry.Batch{Kind: telemetry.KindIncidents, Env: "dev", Sidecar: "pod-a", Boot: b.boot, Seq: 1,
				From: at("2026-11-20T10:00:00Z"), To: at("2026-11-20T10:00:50Z"), Data: data})
			req, _ := http.NewRequest("POST", server+"/api/v1/envs/dev/telemetry", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+admin)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("telemetry: %d", resp.StatusCode)
			}
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, out, _ := runCLI("incidents", "--env", "dev", "--status", "superseded", "--server", server, "--token", admin)
			if code == 0 && strings.Contains(out, "fail_mode") && strings.Count(out, "pod-a") == 1 {
				if code, out, _ = runCLI("incidents", "--env", "dev", "--server", server, "--token", admin); code == 0 && strings.Count(out, "pod-a") == 3 {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the incident records did not arrive within 15s: %s", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
