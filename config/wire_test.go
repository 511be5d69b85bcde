package config

import (
	"maps"
	"testing"
)

// TestNextFlagVersions: puts take the changeset's version, deletes drop
// the flag, other flags keep theirs, and the input is never modified (it
// is the previous head's, shared with readers).
func TestNextFlagVersions(t *testing.T) {
	tests := []struct {
		name string
		fv   map[string]uint64 // nil: no previous set
		cs   *Changeset
		want map[string]uint64
	}{
		{"first commit", nil, &Changeset{Version: 1, Changes: []Change{{Flag: "a", Op: OpPut}}}, map[string]uint64{"a": 1}},
		{"put, new flag and delete", map[string]uint64{"a": 1, "b": 2, "c": 3},
			&Changeset{Version: 4, Changes: []Change{{Flag: "a", Op: OpPut}, {Flag: "d", Op: OpPut}, {Flag: "c", Op: OpDelete}}},
			map[string]uint64{"a": 4, "b": 2, "d": 4}},
		{"delete of an absent flag", map[string]uint64{"a": 1}, &Changeset{Version: 2, Changes: []Change{{Flag: "z", Op: OpDelete}}}, map[string]uint64{"a": 1}},
		{"metadata only", map[string]uint64{"a": 1}, &Changeset{Version: 2, Metadata: map[string]any{"team": "x"}}, map[string]uint64{"a": 1}},
	}
	for _, tc := range tests {
		var prev *State
		if tc.fv != nil {
			prev = &State{flagVersions: flagVersionsFrom(tc.fv)}
		} else {
			prev = &State{}
		}
		next := &State{flagVersions: nextFlagVersions(prev.flagVersions, tc.cs)}
		if got := next.flagVersionMap(); !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		if next.FlagVersionCount() != len(tc.want) {
			t.Errorf("%s: FlagVersionCount %d, want %d", tc.name, next.FlagVersionCount(), len(tc.want))
		}
		for k, v := range tc.want {
			if got, ok := next.LookupFlagVersion(k); !ok || got != v || next.FlagVersion(k) != v {
				t.Errorf("%s: version of %s = %d, %v; want %d", tc.name, k, got, ok, v)
			}
		}
		if _, ok := next.LookupFlagVersion("never"); ok || next.FlagVersion("never") != 0 {
			t.Errorf("%s: an absent flag has a version", tc.name)
		}
		if before := prev.flagVersionMap(); tc.fv != nil && !maps.Equal(before, tc.fv) {
			t.Errorf("%s: the input became %v", tc.name, before)
		}
	}
}
