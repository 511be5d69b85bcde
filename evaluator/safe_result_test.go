package evaluator

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSafeResult: failMode closed answers with a value — the safeVariant,
// else the defaultVariant, else none (code default) — reason STALE, no
// error code, the flag's metadata plus pennonFailMode and pennonFailReason.
func TestSafeResult(t *testing.T) {
	variants := []VariantSpec{{Name: "on", Value: true}, {Name: "off", Value: false}}
	tests := []struct {
		name      string
		spec      FlagSpec
		variant   string
		valueJSON string // "" when there is no value
		reasonHas string
	}{
		{"safe variant", FlagSpec{Key: "f", Variants: variants, DefaultVariant: "on", HasDefaultVariant: true, SafeVariant: "off"}, "off", "false", "control plane down"},
		{"no safe variant: default variant", FlagSpec{Key: "f", Variants: variants, DefaultVariant: "on", HasDefaultVariant: true}, "on", "true", "no safeVariant, so its defaultVariant is served"},
		{"neither: code default", FlagSpec{Key: "f", Variants: variants}, "", "", "neither safeVariant nor defaultVariant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Propagation, tc.spec.FailMode = AlwaysFresh, FailClosed
			tc.spec.Metadata = map[string]any{"team": "pay"}
			snap, problems := NewSnapshot(1, []FlagSpec{tc.spec}, SnapshotOptions{})
			if len(problems) > 0 {
				t.Fatal(problems)
			}
			r := snap.Flag("f").SafeResult("control plane down")
			if r.Variant != tc.variant || r.HasValue != (tc.valueJSON != "") || string(r.ValueJSON) != tc.valueJSON {
				t.Fatalf("variant %q value %s (has %v), want %q %s", r.Variant, r.ValueJSON, r.HasValue, tc.variant, tc.valueJSON)
			}
			if r.Reason != "STALE" || r.ErrorCode != CodeNone || r.ErrorDetails != "" {
				t.Fatalf("reason %s code %q details %q", r.Reason, r.ErrorCode, r.ErrorDetails)
			}
			var md map[string]any
			if err := json.Unmarshal(r.MetadataJSON, &md); err != nil {
				t.Fatalf("metadata %s: %v", r.MetadataJSON, err)
			}
			why, _ := md["pennonFailReason"].(string)
			if md["team"] != "pay" || md["pennonFailMode"] != "closed" || !strings.Contains(why, tc.reasonHas) || r.Metadata["pennonFailReason"] != why {
				t.Fatalf("metadata %s", r.MetadataJSON)
			}
			// The snapshot's own metadata is shared and must not change.
			if _, leaked := snap.Flag("f").result(nil, ReasonStatic).Metadata["pennonFailMode"]; leaked {
				t.Fatal("SafeResult wrote into the flag's shared metadata")
			}
		})
	}
}
