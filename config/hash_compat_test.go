package config

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// TestLegacySignedHistoryKeepsItsHashes: a stream written by a control
// plane from before the tree format (changesets signed with "sha256:"
// hashes, one older still with no hash, a signed KV snapshot) read by this
// one. Every version keeps the hash it was signed with — in heads, in
// StateAt, in served snapshots, after a restart from the stream or from
// the old snapshot — and only versions committed now get "sha256t1:"
// hashes: a version whose hash changed format would look like drift to
// every sidecar holding it.
func TestLegacySignedHistoryKeepsItsHashes(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key, SnapshotEvery: 1000})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	old := attacker(t, srv) // NATS rights like a control plane's; it holds the real key here
	docs := []*Document{Empty()}
	oldCommit := func(flag string, n int, withHash bool) {
		t.Helper()
		v := uint64(len(docs))
		cs := &Changeset{Env: "dev", Version: v, PrevVersion: v - 1, Author: "old control plane", Time: time.Now().UTC(),
			Changes: []Change{{Flag: flag, Op: OpPut, Definition: counterDef(n)}}}
		next, err := docs[v-1].Apply(cs)
		if err != nil {
			t.Fatal(err)
		}
		if withHash {
			cs.Hash = LegacyDocumentHash(next.Canonical())
		}
		data, _ := json.Marshal(cs)
		if got := inject(t, old, "dev", data, key.Sign(sign.PurposeChangeset, data)); got != v {
			t.Fatalf("old commit landed at %d, want %d", got, v)
		}
		docs = append(docs, next)
	}
	oldCommit("a", 1, false) // before changesets carried a hash
	oldCommit("a", 2, true)
	oldCommit("b", 1, true)
	legacy := func(v int) string { return LegacyDocumentHash(docs[v].Canonical()) }

	head, err := s.Head(ctx, "dev")
	if err != nil || head.Version != 3 || head.Hash != legacy(3) {
		t.Fatalf("head v%d %s (%v), want v3 %s", head.Version, head.Hash, err, legacy(3))
	}
	for v := 1; v <= 3; v++ {
		st, err := s.StateAt(ctx, "dev", uint64(v))
		if err != nil || st.Hash != legacy(v) {
			t.Fatalf("StateAt(%d) hash %s (%v), want %s", v, st.Hash, err, legacy(v))
		}
	}
	rec, err := s.Snapshot(ctx, "dev")
	if err != nil || rec.Hash != legacy(3) {
		t.Fatalf("served snapshot hash %s (%v), want %s", rec.Hash, err, legacy(3))
	}
	if err := sign.NewTrust(key.Public()).Verify(sign.PurposeSnapshot, rec.SigningBytes(), rec.Signature); err != nil {
		t.Fatalf("served snapshot signature: %v", err)
	}

	// Committed now: the tree format, what a full parse of the result gives.
	cs4, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "b", Op: OpPut, Definition: counterDef(2), BaseVersion: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	head, _ = s.Head(ctx, "dev")
	if want := mustDocumentHash(t, head.Doc.Canonical()); !strings.HasPrefix(cs4.Hash, "sha256t1:") || cs4.Hash != want || head.Hash != want {
		t.Fatalf("v4 signed %s, head %s, full parse %s", cs4.Hash, head.Hash, want)
	}
	want := []string{"", legacy(1), legacy(2), legacy(3), cs4.Hash}

	// A restarted control plane replays the stream to the same hashes ...
	counter := &foreignCounter{got: map[string]int{}}
	fresh := openTestStore(t, srv, StoreOptions{Signer: key, OnForeign: counter.add})
	for v := 1; v <= 4; v++ {
		st, err := fresh.StateAt(ctx, "dev", uint64(v))
		if err != nil || st.Hash != want[v] {
			t.Fatalf("after a restart, StateAt(%d) hash %s (%v), want %s", v, st.Hash, err, want[v])
		}
	}
	// ... and so does one starting from the old control plane's snapshot
	// at v3; one whose legacy hash does not match its document is ignored.
	kv, err := old.KeyValue(ctx, SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		hash    string
		ignored int
	}{
		{"legacy snapshot", legacy(3), 0},
		{"legacy snapshot of another document", legacy(2), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old3 := &SnapshotRecord{Env: "dev", Version: 3, Time: time.Now().UTC(), Hash: tc.hash, Document: docs[3].Canonical(),
				FlagVersions: map[string]uint64{"a": 2, "b": 3}}
			old3.Signature = key.Sign(sign.PurposeSnapshot, old3.SigningBytes())
			data, _ := json.Marshal(old3)
			if _, err := kv.Put(ctx, "dev", data); err != nil {
				t.Fatal(err)
			}
			counter := &foreignCounter{got: map[string]int{}}
			restarted := openTestStore(t, srv, StoreOptions{Signer: key, OnForeign: counter.add})
			head, err := restarted.Head(ctx, "dev")
			if err != nil || head.Version != 4 || head.Hash != cs4.Hash {
				t.Fatalf("head from the old snapshot v%d %s (%v), want v4 %s", head.Version, head.Hash, err, cs4.Hash)
			}
			if n := counter.count("dev/snapshot-" + ForeignBadSignature); n != tc.ignored {
				t.Fatalf("snapshot ignored %d times (%v), want %d", n, counter.got, tc.ignored)
			}
		})
	}
}
