package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/lifecycle"
	flagusage "github.com/pennon-dev/pennon/usage"
)

// staticUsage is a usage.Reader answering fixed counts (the aggregator's
// own tests cover how counts are made; here they only feed the report).
type staticUsage map[string]flagusage.FlagUsage

func (s staticUsage) FlagUsage(string, int) (map[string]flagusage.FlagUsage, error) { return s, nil }

// `pennon lifecycle` and `pennon refs scan` against a real control plane
// (embedded JetStream) whose flags were committed at crafted times and
// whose report clock is fixed, so the output is the same on every run.
func TestLifecycleAndRefsGolden(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	js, _ := jetstream.New(natsrun.ConnectTest(t, srv))
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	clock := now
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, _, err := toks.Create(ctx, "root", map[string]string{"*": "admin"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "prod", Lifecycle: &config.LifecyclePolicy{StaleDays: 60}}); err != nil {
		t.Fatal(err)
	}
	commit := func(daysAgo int, author string, defs map[string]string) {
		t.Helper()
		clock = now.Add(-time.Duration(daysAgo) * 24 * time.Hour)
		head, err := store.Head(ctx, "prod")
		if err != nil {
			t.Fatal(err)
		}
		var ch []config.Change
		for _, k := range []string{"legacy", "needs-legacy", "old-promo", "checkout-v2", "dark-mode", "new-banner"} {
			if d, ok := defs[k]; ok {
				ch = append(ch, config.Change{Flag: k, Op: config.OpPut, Definition: json.RawMessage(d), BaseVersion: head.FlagVersion(k)})
			}
		}
		if _, err := store.Commit(ctx, &config.Changeset{Env: "prod", Author: author, Changes: ch}); err != nil {
			t.Fatal(err)
		}
	}
	commit(270, "ana", map[string]string{
		"legacy":       `{"state":"DISABLED","variants":{"on":true},"defaultVariant":"on","owner":"core"}`,
		"needs-legacy": `{"state":"ENABLED","variants":{"x":1,"y":2},"defaultVariant":"x","owner":"core","prerequisites":{"legacy":"on"}}`,
		"old-promo":    `{"state":"ENABLED","variants":{"a":"10%","b":"20%"},"defaultVariant":"a","owner":"growth"}`,
	})
	commit(120, "bo", map[string]string{
		"checkout-v2": `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","owner":"payments","expires":"2026-11-01","retirement":{"servedVariant":"on","forDays":14}}`,
		"dark-mode":   `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"web","retirement":"when the redesign ships","targeting":{"fractional":[["on",60],["off",40]]}}`,
	})
	commit(2, "dee", map[string]string{
		"new-banner": `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","expires":"2026-12-05"}`,
	})
	days := func(n int, v map[string]uint64) []flagusage.FlagDay {
		out := make([]flagusage.FlagDay, n)
		for i := range out {
			var total uint64
			for _, c := range v {
				total += c
			}
			out[i] = flagusage.FlagDay{Day: now.Truncate(24 * time.Hour).Add(-time.Duration(n-1-i) * 24 * time.Hour), Evaluations: total, Variants: v}
		}
		return out
	}
	reader := staticUsage{
		"checkout-v2": {LastEvaluated: now.Add(-time.Minute), Last24h: 20000, Last7d: 140000, Variants24h: map[string]uint64{"on": 19995, "off": 5},
			Days: days(14, map[string]uint64{"on": 19995, "off": 5})},
		"dark-mode": {LastEvaluated: now.Add(-3 * time.Hour), Last24h: 1000, Last7d: 7000, Variants24h: map[string]uint64{"on": 600, "off": 400},
			Days: days(14, map[string]uint64{"on": 600, "off": 400})},
		"needs-legacy": {LastEvaluated: now.Add(-time.Hour), Last24h: 10, Last7d: 80, Days: days(14, map[string]uint64{"x": 5, "y": 1})},
		"new-banner":   {LastEvaluated: now.Add(-20 * time.Minute), Last24h: 50, Last7d: 50, Variants24h: map[string]uint64{"on": 50}},
		"old-promo":    {LastEvaluated: now.Add(-40 * 24 * time.Hour)},
	}
	lc, err := lifecycle.New(lifecycle.Options{Store: store, Usage: reader, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	s, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, JetStream: js, DataDir: t.TempDir(), Lifecycle: lc})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx) }()
	t.Cleanup(func() { cancel(); <-done })
	server := "http://" + s.Addr()

	const src = "../../lifecycle/testdata/src"
	steps := []struct {
		name string
		args []string
		code int
	}{
		{"lifecycle", []string{"lifecycle", "--env", "prod"}, 0},
		{"lifecycle_json", []string{"lifecycle", "--env", "prod", "--json"}, 0},
		{"lifecycle_unknown_env", []string{"lifecycle", "--env", "nope"}, 1},
		{"lifecycle_extra_argument", []string{"lifecycle", "prod"}, 2},
		{"envs_create_expired_flags_block", []string{"envs", "create", "strict", "--expired-flags", "block"}, 0},
		{"lifecycle_empty_blocking", []string{"lifecycle", "--env", "strict"}, 0},
		{"envs_create_expired_flags_invalid", []string{"envs", "create", "loose", "--expired-flags", "deny"}, 1},
		{"refs_scan", []string{"refs", "scan", src, "--env", "prod"}, 0},
		{"refs_scan_json", []string{"refs", "scan", src, "--env", "prod", "--json"}, 0},
		{"refs_scan_not_a_directory", []string{"refs", "scan", "lifecycle_test.go", "--env", "prod"}, 2},
		{"refs_without_verb", []string{"refs"}, 2},
		{"refs_scan_without_dir", []string{"refs", "scan"}, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, errOut := runCLI(append(st.args, "--server", server, "--token", admin)...)
			if code != st.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, st.code, out, errOut)
			}
			mask := strings.NewReplacer(server, "<SERVER>", admin, "<TOKEN>").Replace
			got := fmt.Sprintf("$ pennon %s\nexit %d\n--- stdout\n%s--- stderr\n%s", strings.Join(st.args, " "), code, mask(out), mask(errOut))
			golden(t, "golden/"+st.name, got)
		})
	}
}

// In the dev system (the same wiring as pennon server) the report reads
// the usage aggregator: usage is known, not "unknown".
func TestLifecycleWiredInDev(t *testing.T) {
	dev := startDev(t)
	code, out, errOut := runCLI("lifecycle", "--env", "dev", "--json", "--server", dev.api, "--token", dev.admin)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	var r lifecycle.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if !r.UsageKnown || r.UsageNote != "" || len(r.Flags) == 0 || r.Flags[0].Created == nil {
		t.Fatalf("usage known %v (%q), %d flags, first %+v", r.UsageKnown, r.UsageNote, len(r.Flags), r.Flags)
	}
}
