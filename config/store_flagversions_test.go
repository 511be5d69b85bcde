package config

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// TestSnapshotRecordRoundTripsByteIdentically: the per-flag versions are
// held copy-on-write in a State but keep their wire form. A snapshot the
// store wrote to KV, read back by another store (no shared cache) and
// encoded again for serving, is the same bytes; its flagVersions object
// holds what the commits said.
func TestSnapshotRecordRoundTripsByteIdentically(t *testing.T) {
	ctx := context.Background()
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	srv := natsrun.StartTest(t)
	w := openTestStore(t, srv, StoreOptions{SnapshotEvery: 4, Signer: key})
	if err := w.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	steps := []*Changeset{
		{Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(1)}, {Flag: "b", Op: OpPut, Definition: counterDef(1)}, {Flag: "c", Op: OpPut, Definition: counterDef(1)}}},
		{Changes: []Change{{Flag: "b", Op: OpPut, Definition: counterDef(2), BaseVersion: 1}}},
		{Changes: []Change{{Flag: "c", Op: OpDelete, BaseVersion: 1}, {Flag: "d", Op: OpPut, Definition: counterDef(3)}}},
		{Metadata: map[string]any{"team": "core"}},
	}
	for i, cs := range steps {
		cs.Env, cs.Author = "dev", "t"
		if _, err := w.Commit(ctx, cs); err != nil {
			t.Fatalf("commit %d: %v", i+1, err)
		}
	}
	if err := w.FlushSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	ent, err := w.snaps.Get(ctx, "dev")
	if err != nil {
		t.Fatalf("the snapshot due at version 4 is not in KV: %v", err)
	}
	stored := ent.Value()
	var rec SnapshotRecord
	if err := json.Unmarshal(stored, &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"a": 1, "b": 2, "d": 3}
	if rec.Version != 4 || len(rec.FlagVersions) != len(want) {
		t.Fatalf("stored record: version %d, flag versions %v; want 4, %v", rec.Version, rec.FlagVersions, want)
	}
	for k, v := range want {
		if rec.FlagVersions[k] != v {
			t.Fatalf("stored flag versions %v, want %v", rec.FlagVersions, want)
		}
	}
	if !bytes.Contains(stored, []byte(`"flagVersions":{"a":1,"b":2,"d":3}`)) {
		t.Fatalf("stored record's flagVersions is not the sorted JSON object: %s", stored)
	}

	r := openTestStore(t, srv, StoreOptions{SnapshotEvery: 4, Signer: key})
	st, why, err := r.readSnapshot(ctx, "dev")
	if err != nil || st == nil {
		t.Fatalf("read back: %v (%s)", err, why)
	}
	for k, v := range want {
		if st.FlagVersion(k) != v {
			t.Fatalf("read back: %s at %d, want %d", k, st.FlagVersion(k), v)
		}
	}
	if st.FlagVersionCount() != len(want) {
		t.Fatalf("read back: %d flag versions, want %d", st.FlagVersionCount(), len(want))
	}
	_, served, err := r.servedRecord(st)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, stored) {
		t.Fatalf("re-encoded record differs from the stored one:\nstored %s\nserved %s", stored, served)
	}
}

// TestZeroStateHasNoFlagVersions: a State built without versions answers
// reads instead of panicking.
func TestZeroStateHasNoFlagVersions(t *testing.T) {
	var st State
	if v, ok := st.LookupFlagVersion("a"); v != 0 || ok || st.FlagVersion("a") != 0 || st.FlagVersionCount() != 0 {
		t.Fatalf("zero state: %d %v %d", v, ok, st.FlagVersionCount())
	}
	for k := range st.AllFlagVersions() {
		t.Fatalf("zero state iterates %s", k)
	}
}
