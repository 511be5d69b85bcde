package config

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/internal/natsrun"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

func goldenFile(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "store", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if string(want) != string(got) {
		t.Fatalf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// checkoutHistory builds the checkout example's history:
//
//	v1 load the example
//	v2 alice: payment-api-v2 gains a "canary" variant and 100% rollout in the Nordics
//	v3 bob: performance-mode switched off on purpose (incident)
//	v4 carol, emergency: payment-api-v2 default on
//	v5 dave: new flag fast-pay requires payment-api-v2 = canary
func checkoutHistory(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	now := time.Date(2027, 2, 15, 12, 0, 0, 0, time.UTC)
	s := openTestStore(t, srv, StoreOptions{Now: func() time.Time { return now }})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "production"}); err != nil {
		t.Fatal(err)
	}
	doc, err := Parse(examples.Checkout)
	if err != nil {
		t.Fatal(err)
	}
	first := LoadChangeset("production", doc, "setup", "")
	commit := func(cs *Changeset) {
		t.Helper()
		cs.Env = "production"
		if _, err := s.Commit(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	commit(first)
	edit := func(flag string, f func(m map[string]any)) json.RawMessage {
		head, _ := s.Head(ctx, "production")
		var m map[string]any
		json.Unmarshal(head.Doc.FlagJSON(flag), &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	base := func(flag string) uint64 { h, _ := s.Head(ctx, "production"); return h.FlagVersion(flag) }
	commit(&Changeset{Author: "alice", Reason: "canary for the new API", Changes: []Change{{Flag: "payment-api-v2", Op: OpPut, BaseVersion: base("payment-api-v2"),
		Definition: edit("payment-api-v2", func(m map[string]any) {
			m["variants"].(map[string]any)["canary"] = true
		})}}})
	commit(&Changeset{Author: "bob", Reason: "incident 4711: fast mode corrupts carts", Changes: []Change{{Flag: "performance-mode", Op: OpPut, BaseVersion: base("performance-mode"),
		Definition: edit("performance-mode", func(m map[string]any) { m["state"] = "DISABLED" })}}})
	commit(&Changeset{Author: "carol", Reason: "v1 outage: route everyone to v2", Emergency: true, Changes: []Change{{Flag: "payment-api-v2", Op: OpPut, BaseVersion: base("payment-api-v2"),
		Definition: edit("payment-api-v2", func(m map[string]any) { m["defaultVariant"] = "on" })}}})
	commit(&Changeset{Author: "dave", Reason: "fast pay on the canary", Changes: []Change{{Flag: "fast-pay", Op: OpPut,
		Definition: []byte(`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","systems":["payments"],"prerequisites":{"payment-api-v2":"canary"}}`)}}})
	return s
}

func TestRollbackDryRunGolden(t *testing.T) {
	s := checkoutHistory(t)
	ctx := context.Background()
	for _, tc := range []struct{ name, flag string }{{"rollback_payment-api-v2", "payment-api-v2"}, {"rollback_performance-mode", "performance-mode"}} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := s.PlanRollback(ctx, "production", 1, []string{tc.flag})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.MarshalIndent(plan, "", "  ")
			goldenFile(t, tc.name+".golden.json", append(b, '\n'))
			goldenFile(t, tc.name+".golden.txt", []byte(plan.Text()))
		})
	}
	// Rolling back performance-mode is valid and becomes a new changeset.
	cs, err := s.Rollback(ctx, "production", 1, []string{"performance-mode"}, "erin", "incident resolved", false)
	if err != nil || cs.Version != 6 || cs.RollbackTo != 1 {
		t.Fatalf("rollback: %+v %v", cs, err)
	}
	head, _ := s.Head(ctx, "production")
	if !head.Doc.Flag("performance-mode").Enabled() {
		t.Fatal("performance-mode not restored")
	}
	// Rolling back payment-api-v2 would break fast-pay: rejected, nothing changes.
	if _, err := s.Rollback(ctx, "production", 1, []string{"payment-api-v2"}, "erin", "x", false); err == nil || !strings.Contains(err.Error(), "fast-pay") {
		t.Fatalf("want rejection naming fast-pay, got %v", err)
	}
	d, err := s.Diff(ctx, "production", 1, 6)
	if err != nil {
		t.Fatal(err)
	}
	goldenFile(t, "diff_1_6.golden.txt", []byte(d.Text()))
}
