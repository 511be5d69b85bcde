package config

import (
	"maps"
	"testing"
)

// TestNextFlagVersions: puts take the changeset's version, deletes drop
// the flag, other flags keep theirs, and the input map is never modified
// (it is the previous head's, shared with readers).
func TestNextFlagVersions(t *testing.T) {
	tests := []struct {
		name string
		fv   map[string]uint64
		cs   *Changeset
		want map[string]uint64
	}{
		{"first commit", nil, &Changeset{Version: 1, Changes: []Change{{Flag: "a", Op: OpPut}}}, map[string]uint64{"a": 1}},
		{"put, new flag and delete", map[string]uint64{"a": 1, "b": 2, "c": 3},
			&Changeset{Version: 4, Changes: []Change{{Flag: "a", Op: OpPut}, {Flag: "d", Op: OpPut}, {Flag: "c", Op: OpDelete}}},
			map[string]uint64{"a": 4, "b": 2, "d": 4}},
		{"metadata only", map[string]uint64{"a": 1}, &Changeset{Version: 2, Metadata: map[string]any{"team": "x"}}, map[string]uint64{"a": 1}},
	}
	for _, tc := range tests {
		before := maps.Clone(tc.fv)
		got := NextFlagVersions(tc.fv, tc.cs)
		if !maps.Equal(got, tc.want) || got == nil {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		if !maps.Equal(tc.fv, before) {
			t.Errorf("%s: the input became %v", tc.name, tc.fv)
		}
	}
}
