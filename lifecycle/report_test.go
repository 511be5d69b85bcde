package lifecycle

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/usage"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// now is the reports' clock.
var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func ago(days int) time.Time { return now.Add(-time.Duration(days) * day) }

// craftedDoc has one flag per finding (and a few with none).
const craftedDoc = `{"flags":{
 "checkout-v2":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"payments","expires":"2026-11-01",
   "retirement":{"servedVariant":"on","forDays":14}},
 "new-banner":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","expires":"2026-12-05"},
 "old-promo":{"state":"ENABLED","variants":{"a":"10%","b":"20%"},"defaultVariant":"a","owner":"growth"},
 "dark-mode":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"web","retirement":"when the redesign ships",
   "targeting":{"fractional":[["on",60],["off",40]]}},
 "beta-gate":{"state":"ENABLED","variants":{"yes":true,"no":false},"defaultVariant":"no","owner":"web"},
 "legacy":{"state":"DISABLED","variants":{"on":true},"defaultVariant":"on","owner":"core"},
 "needs-legacy":{"state":"ENABLED","variants":{"x":1,"y":2},"defaultVariant":"x","owner":"core","prerequisites":{"legacy":"on"}},
 "pending-retire":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","owner":"search",
   "retirement":{"servedVariant":"on","forDays":14,"after":"2027-01-01","note":"after the holiday freeze"}}
}}`

// craftedHistory is the changesets that built craftedDoc (definitions only
// matter for prerequisites): beta-ui required beta-gate and was deleted.
func craftedHistory() []*config.Changeset {
	put := func(flag, def string) config.Change {
		if def == "" {
			def = "{}"
		}
		return config.Change{Flag: flag, Op: config.OpPut, Definition: json.RawMessage(def)}
	}
	cs := func(v uint64, days int, author string, ch ...config.Change) *config.Changeset {
		return &config.Changeset{Version: v, Time: ago(days), Author: author, Changes: ch}
	}
	return []*config.Changeset{
		cs(1, 300, "ana", put("old-promo", ""), put("legacy", ""), put("beta-gate", "")),
		cs(2, 250, "ana", put("old-promo", ""), put("beta-ui", `{"prerequisites":{"beta-gate":"yes"}}`)),
		cs(3, 120, "bo", put("checkout-v2", ""), put("dark-mode", ""), put("needs-legacy", `{"prerequisites":{"legacy":"on"}}`)),
		cs(4, 60, "bo", put("checkout-v2", ""), put("pending-retire", "")),
		cs(5, 45, "cy", config.Change{Flag: "beta-ui", Op: config.OpDelete}),
		cs(6, 2, "dee", put("new-banner", ""), put("dark-mode", "")),
	}
}

// daysOf is n days of usage, oldest first, ending today, each with the
// variant counts given.
func daysOf(n int, variants map[string]uint64) []usage.FlagDay {
	out := make([]usage.FlagDay, n)
	for i := range out {
		d := now.Truncate(day).Add(-time.Duration(n-1-i) * day)
		var total uint64
		for _, c := range variants {
			total += c
		}
		out[i] = usage.FlagDay{Day: d, Evaluations: total, Variants: variants}
	}
	return out
}

func craftedUsage() map[string]usage.FlagUsage {
	return map[string]usage.FlagUsage{
		// 99.95 % "on" for 14 days: settled, and its criteria hold.
		"checkout-v2": {LastEvaluated: now.Add(-time.Minute), Last24h: 20000, Last7d: 140000, Variants24h: map[string]uint64{"on": 19990, "off": 10},
			Days: daysOf(14, map[string]uint64{"on": 19990, "off": 10})},
		"new-banner": {LastEvaluated: now.Add(-time.Hour), Last24h: 50, Last7d: 60, Variants24h: map[string]uint64{"on": 50},
			Days: append(daysOf(12, nil), daysOf(2, map[string]uint64{"on": 30})...)},
		// Last evaluated 40 days ago.
		"old-promo": {LastEvaluated: ago(40), Days: daysOf(14, nil)},
		"dark-mode": {LastEvaluated: now.Add(-time.Second), Last24h: 1000, Last7d: 7000, Variants24h: map[string]uint64{"on": 600, "off": 400},
			Days: daysOf(14, map[string]uint64{"on": 600, "off": 400})},
		"needs-legacy": {LastEvaluated: now.Add(-time.Minute), Last24h: 10, Last7d: 70, Variants24h: map[string]uint64{"x": 10},
			Days: daysOf(14, map[string]uint64{"x": 5})},
		// pending-retire: settled on "on", but its "after" is in the future.
		"pending-retire": {LastEvaluated: now.Add(-time.Minute), Last24h: 100, Last7d: 700, Variants24h: map[string]uint64{"on": 100},
			Days: daysOf(14, map[string]uint64{"on": 100})},
		// beta-gate and legacy: never evaluated.
	}
}

func TestBuildGolden(t *testing.T) {
	doc, err := config.Parse([]byte(craftedDoc))
	if err != nil {
		t.Fatal(err)
	}
	h := newHistory()
	for _, cs := range craftedHistory() {
		h.fold(cs)
	}
	facts := h.facts(doc)
	defaults := (*config.LifecyclePolicy)(nil).WithDefaults()
	lenient := (&config.LifecyclePolicy{StaleDays: 365, UnusedDays: 60, SettledDays: 30, ExpiringSoonDays: 3}).WithDefaults()
	cases := []struct {
		name   string
		usage  map[string]usage.FlagUsage
		uerr   string
		policy config.LifecyclePolicy
	}{
		{name: "usage-known", usage: craftedUsage(), policy: defaults},
		// No reader or a failing one: nothing unused or settled, said so.
		{name: "usage-unknown", uerr: "usage aggregator: stream not found", policy: defaults},
		// Longer thresholds: no stale, no unused, settled needs 30 days.
		{name: "lenient-policy", usage: craftedUsage(), policy: lenient},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Build(Input{Env: "prod", Version: 6, Doc: doc, Facts: facts, Usage: tc.usage, UsageError: tc.uerr, Now: now, Policy: tc.policy})
			got, err := json.MarshalIndent(r, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "report-"+tc.name+".golden"), append(got, '\n'))
		})
	}
}

// golden compares got with the file (rewritten with -update).
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking):\n%s", path, got)
	}
}

// The findings of each crafted flag, as the user reads them in the
// report's JSON (kinds only; the golden files hold the messages).
func TestBuildFindings(t *testing.T) {
	doc, _ := config.Parse([]byte(craftedDoc))
	h := newHistory()
	for _, cs := range craftedHistory() {
		h.fold(cs)
	}
	r := Build(Input{Env: "prod", Doc: doc, Facts: h.facts(doc), Usage: craftedUsage(), Now: now, Policy: (*config.LifecyclePolicy)(nil).WithDefaults()})
	want := map[string][]string{
		"beta-gate":      {KindUnused, KindStale, KindOrphanedPrereq},
		"checkout-v2":    {KindExpired, KindSettled, KindRetirement},
		"dark-mode":      {},
		"legacy":         {KindUnused, KindStale},
		"needs-legacy":   {KindStale, KindSettled, KindOrphanedPrereq}, // always the default x
		"new-banner":     {KindExpiringSoon, KindOwnerless},
		"old-promo":      {KindUnused, KindStale},
		"pending-retire": {KindSettled},
	}
	for _, f := range r.Flags {
		var kinds []string
		for _, fd := range f.Findings {
			kinds = append(kinds, fd.Kind)
		}
		if w := want[f.Key]; !slices.Equal(kinds, w) {
			t.Errorf("%s: findings %v, want %v", f.Key, kinds, w)
		}
	}
	if len(r.Flags) != len(want) {
		t.Errorf("%d flags reported, want %d", len(r.Flags), len(want))
	}
	// What to keep: the settled variant and its value.
	for _, fd := range r.Flags[1].Findings {
		if fd.Kind == KindSettled && (fd.Variant != "on" || string(fd.Value) != "true") {
			t.Errorf("checkout-v2 settled keeps %q=%s, want on=true", fd.Variant, fd.Value)
		}
	}
}
