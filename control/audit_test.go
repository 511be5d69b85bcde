package control

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

// auditEntries reads the chain through the API.
func (f *fixture) auditEntries(t *testing.T) []AuditEntry {
	t.Helper()
	code, body := f.do(t, f.admin, "GET", "/api/v1/audit", "")
	if code != 200 {
		t.Fatalf("audit list: %d %s", code, body)
	}
	var out struct{ Entries []AuditEntry }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	return out.Entries
}

func (f *fixture) verify(t *testing.T) VerifyResult {
	t.Helper()
	code, body := f.do(t, f.admin, "GET", "/api/v1/audit/verify", "")
	if code != 200 {
		t.Fatalf("audit verify: %d %s", code, body)
	}
	var res VerifyResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// rebuildAudit deletes the audit stream and recreates it with entries, as
// an attacker holding JetStream API rights (but not the signing key) can.
func rebuildAudit(t *testing.T, js jetstream.JetStream, entries []AuditEntry) {
	t.Helper()
	ctx := context.Background()
	if err := js.DeleteStream(ctx, config.AuditStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: config.AuditStream, Subjects: []string{config.AuditSubject}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, _ := json.Marshal(e)
		if _, err := js.Publish(ctx, config.AuditSubject, b); err != nil {
			t.Fatal(err)
		}
	}
}

// rehash recomputes hashes and links from entry `from` on (1-based), the
// way a forger without the key would: signatures cannot be recomputed, so
// they are left as they were (or dropped).
func rehash(entries []AuditEntry, from int) []AuditEntry {
	out := append([]AuditEntry(nil), entries...)
	for i := from - 1; i < len(out); i++ {
		out[i].Seq = uint64(i + 1)
		if i > 0 {
			out[i].PrevHash = out[i-1].Hash
		}
		out[i].Hash = entryHash(out[i])
	}
	return out
}

// TestAuditAttacksDetected runs each attack on the audit stream that a
// holder of JetStream rights (but not the signing key) can make, and
// checks that verify (online and offline from an export) fails naming the
// entry.
func TestAuditAttacksDetected(t *testing.T) {
	cases := []struct {
		name     string
		attack   func(t *testing.T, f *fixture, entries []AuditEntry)
		firstBad func(n int) uint64
		want     func(n int) string // names the entry
	}{
		{"rewrite entry 3 (delete and republish with a recomputed hash)", func(t *testing.T, f *fixture, entries []AuditEntry) {
			ctx := context.Background()
			st, _ := f.js.Stream(ctx, config.AuditStream)
			if err := st.DeleteMsg(ctx, 3); err != nil {
				t.Fatal(err)
			}
			e := entries[2]
			e.Actor = "mallory (0000000000000000)"
			e.Hash = entryHash(e)
			b, _ := json.Marshal(e)
			if _, err := f.js.Publish(ctx, config.AuditSubject, b); err != nil {
				t.Fatal(err)
			}
		}, func(int) uint64 { return 3 }, func(int) string { return "entry 3 was deleted" }},
		{"delete entry 4", func(t *testing.T, f *fixture, _ []AuditEntry) {
			st, _ := f.js.Stream(context.Background(), config.AuditStream)
			if err := st.DeleteMsg(context.Background(), 4); err != nil {
				t.Fatal(err)
			}
		}, func(int) uint64 { return 4 }, func(int) string { return "entry 4 was deleted" }},
		{"truncate the tail (stream rebuilt without the last 3 entries, all valid)", func(t *testing.T, f *fixture, entries []AuditEntry) {
			rebuildAudit(t, f.js, entries[:len(entries)-3])
		}, func(n int) uint64 { return uint64(n - 2) }, func(n int) string {
			return fmt.Sprintf("entries %d..%d were removed (truncated tail)", n-2, n)
		}},
		{"rebuild the whole chain with valid hashes and entry 2 edited", func(t *testing.T, f *fixture, entries []AuditEntry) {
			forged := append([]AuditEntry(nil), entries...)
			forged[1].Outcome = "rejected"
			rebuildAudit(t, f.js, rehash(forged, 2))
		}, func(int) uint64 { return 2 }, func(int) string { return "entry 2 is not signed by the control plane" }},
		{"rebuild unsigned, content unchanged", func(t *testing.T, f *fixture, entries []AuditEntry) {
			forged := append([]AuditEntry(nil), entries...)
			for i := range forged {
				forged[i].Signature = ""
			}
			rebuildAudit(t, f.js, forged)
		}, func(int) uint64 { return 1 }, func(int) string { return "entry 1 is not signed by the control plane (not signed)" }},
		{"reorder entries 2 and 3", func(t *testing.T, f *fixture, entries []AuditEntry) {
			swapped := append([]AuditEntry(nil), entries...)
			swapped[1], swapped[2] = swapped[2], swapped[1]
			rebuildAudit(t, f.js, swapped)
		}, func(int) uint64 { return 2 }, func(int) string { return "entry 2 is missing or out of order (found sequence 3 in its place)" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			for i := 0; i < 5; i++ {
				if code, body := f.do(t, f.tokens["editor"], "PUT", fmt.Sprintf("/api/v1/envs/dev/flags/f%d", i), `{"definition":`+flagDef+`}`); code != 201 {
					t.Fatalf("%d %s", code, body)
				}
			}
			entries := f.auditEntries(t)
			if res := f.verify(t); !res.OK || res.Anchors == 0 {
				t.Fatalf("before the attack: %+v", res)
			}
			// The export an auditor took before the attack also verifies offline.
			anchors, err := f.srv.auditAnchors(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res := VerifyEntries(entries, anchors, f.srv.trust); !res.OK {
				t.Fatalf("offline before the attack: %+v", res)
			}
			tc.attack(t, f, entries)
			res := f.verify(t)
			want := tc.want(len(entries))
			if res.OK || res.FirstBad != tc.firstBad(len(entries)) || !strings.Contains(res.Problem, want) {
				t.Fatalf("verify after the attack: got ok=%v firstBad=%d %q; want firstBad=%d containing %q\n%+v", res.OK, res.FirstBad, res.Problem, tc.firstBad(len(entries)), want, res.Problems)
			}
			// Offline, from an export taken after the attack (anchors included).
			after := f.auditEntries(t)
			anchors, err = f.srv.auditAnchors(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if off := VerifyEntries(after, anchors, f.srv.trust); off.OK || off.FirstBad != res.FirstBad || off.Problem != res.Problem {
				t.Fatalf("offline verify disagrees: %+v vs %+v", off, res)
			}
		})
	}
}

// TestAuditAnchors checks what pins the chain: every committed changeset
// names the audit tail at commit time, the signed checkpoint follows the
// tail, and a checkpoint is never moved onto a chain that lost it.
func TestAuditAnchors(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		f.do(t, f.tokens["editor"], "PUT", fmt.Sprintf("/api/v1/envs/dev/flags/a%d", i), `{"definition":`+flagDef+`}`)
	}
	entries := f.auditEntries(t)
	n := len(entries)
	// Each commit's AuditHead is the entry before its own commit entry.
	for v := uint64(1); v <= 3; v++ {
		cs, err := f.store.Changeset(ctx, "dev", v)
		if err != nil {
			t.Fatal(err)
		}
		if cs.AuditHead == nil {
			t.Fatalf("changeset %d has no auditHead", v)
		}
		own := -1
		for i, e := range entries {
			if e.Action == "commit" && e.Details["version"] == float64(v) {
				own = i
			}
		}
		if own < 0 || cs.AuditHead.Seq != entries[own].Seq-1 || (own > 0 && cs.AuditHead.Hash != entries[own-1].Hash) {
			t.Fatalf("changeset %d anchors %+v; its audit entry is %d", v, cs.AuditHead, own+1)
		}
	}
	// The checkpoint names the tail and is signed by the control plane.
	var cp AuditCheckpoint
	data, err := os.ReadFile(filepath.Join(f.data, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatal(err)
	}
	if cp.Seq != uint64(n) || cp.Hash != entries[n-1].Hash {
		t.Fatalf("checkpoint %d %s, tail %d %s", cp.Seq, cp.Hash, n, entries[n-1].Hash)
	}
	if err := f.srv.trust.Verify(sign.PurposeAudit, cp.signingBytes(), cp.Signature); err != nil {
		t.Fatalf("checkpoint signature: %v", err)
	}
	// Truncate, then keep working: new entries are appended, but the
	// checkpoint stays on the lost entry, so verify keeps failing.
	rebuildAudit(t, f.js, entries[:n-2])
	f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/after", `{"definition":`+flagDef+`}`)
	data, _ = os.ReadFile(filepath.Join(f.data, CheckpointFile))
	var cp2 AuditCheckpoint
	json.Unmarshal(data, &cp2)
	if cp2.Seq != cp.Seq || cp2.Hash != cp.Hash {
		t.Fatalf("checkpoint moved onto the truncated chain: %+v → %+v", cp, cp2)
	}
	if res := f.verify(t); res.OK || res.FirstBad != uint64(n) || !strings.Contains(res.Problem, "truncated tail") {
		t.Fatalf("after truncation and a new entry: %+v", res)
	}
	// The commit made after the truncation anchors the checkpoint, not the
	// truncated chain's tail: a signed changeset never vouches for it.
	head, _ := f.store.Head(ctx, "dev")
	last, err := f.store.Changeset(ctx, "dev", head.Version)
	if err != nil {
		t.Fatal(err)
	}
	if last.AuditHead == nil || last.AuditHead.Seq != cp.Seq || last.AuditHead.Hash != cp.Hash {
		t.Fatalf("changeset after truncation anchors %+v, want the checkpoint %d %s", last.AuditHead, cp.Seq, cp.Hash)
	}
	if f.logs.FilterMessageSnippet("no longer contains the checkpointed entry").Len() != 1 {
		t.Fatal("contradiction not logged once")
	}
	// A forged checkpoint (attacker with the data dir but no key) is reported.
	cp.Signature = ""
	forged, _ := json.Marshal(cp)
	os.WriteFile(filepath.Join(f.data, CheckpointFile), forged, 0o600)
	if res := f.verify(t); res.OK || !strings.Contains(fmt.Sprint(res.Problems), "the anchor file was altered") {
		t.Fatalf("forged checkpoint: %+v", res)
	}
	os.WriteFile(filepath.Join(f.data, CheckpointFile), []byte("{not json"), 0o600)
	if res := f.verify(t); res.OK || !strings.Contains(res.Problem, "the checkpoint file is unreadable") {
		t.Fatalf("damaged checkpoint: %+v", res)
	}
}

// TestAuditContinuesAfterTailDeleted: deleting the last entry (with no
// checkpoint or memory of it, as after a restart without a data dir) must
// not stop auditing or commits; verify names the deletion.
func TestAuditContinuesAfterTailDeleted(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/a", `{"definition":`+flagDef+`}`)
	f.do(t, f.tokens["editor"], "PUT", "/api/v1/envs/dev/flags/b", `{"definition":`+flagDef+`}`)
	n := len(f.auditEntries(t))
	st, _ := f.js.Stream(ctx, config.AuditStream)
	if err := st.DeleteMsg(ctx, uint64(n)); err != nil {
		t.Fatal(err)
	}
	// A control plane that never saw the tail (no checkpoint, fresh memory).
	s2, err := New(Options{Addr: "127.0.0.1:0", Store: f.store, Tokens: f.toks, JetStream: f.js, Signer: f.key})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := f.toks.Authenticate(ctx, f.tokens["editor"])
	if _, err := s2.commitAnchored(ctx, principal{tok: rec}, &config.Changeset{Env: "dev", Author: "x", Changes: []config.Change{{Flag: "c", Op: config.OpPut, Definition: []byte(flagDef)}}}); err != nil {
		t.Fatalf("commit after the tail was deleted: %v", err)
	}
	s2.record(ctx, principal{tok: rec}, "commit", "dev", "c", "committed", map[string]any{"version": 3})
	// Starting, s2 re-recorded the deleted commit entry (outcome recovered),
	// linked to the unknown tail; the new commit's entry follows it.
	entries := f.auditEntries(t)
	if len(entries) != n+2 || entries[n].PrevHash != unknownLink(uint64(n)) || entries[n].Outcome != "recovered" || entries[n+1].PrevHash != entries[n].Hash {
		t.Fatalf("entries after the deleted tail: %d, %+v", len(entries), entries[n:])
	}
	if res := f.verify(t); res.OK || res.FirstBad != uint64(n) || !strings.Contains(res.Problem, fmt.Sprintf("entry %d was deleted", n)) {
		t.Fatalf("verify: %+v", res)
	}
}

// TestReconcileAtStart commits through the store directly (as a control
// plane that crashed between commit and audit would leave things), past
// version 1,000, then starts a control plane: every version gets a
// "recovered" entry from its changeset, the emergency past 1,000 is
// indexed and listed, and the chain verifies.
func TestReconcileAtStart(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	const n = 1003
	for v := 1; v <= n; v++ {
		cs := &config.Changeset{Env: "dev", Author: "crashed-bot (0123456789abcdef)", Reason: fmt.Sprintf("step %d", v),
			Changes: []config.Change{{Flag: "counter", Op: config.OpPut, Definition: []byte(flagDef), BaseVersion: uint64(max(v-1, 0))}}}
		if v == 1 {
			cs.Changes[0].BaseVersion = 0
		}
		if v == 1002 {
			cs.Emergency, cs.Reason = true, "outage at 1002"
		}
		if _, err := f.store.Commit(ctx, cs); err != nil {
			t.Fatalf("commit %d: %v", v, err)
		}
	}
	// A forged message (no signature) lands at version n+1.
	if _, err := f.js.Publish(ctx, config.LogSubject("dev"), []byte(`{"env":"dev","version":1004,"prevVersion":1003,"author":"mallory","changes":[]}`)); err != nil {
		t.Fatal(err)
	}
	before := len(f.auditEntries(t))
	s2, logs := f.second(t)
	entries := f.auditEntries(t)
	recovered := map[float64]AuditEntry{}
	for _, e := range entries[before:] {
		if e.Outcome == "recovered" && e.Env == "dev" {
			recovered[e.Details["version"].(float64)] = e
		}
	}
	if len(recovered) != n {
		t.Fatalf("recovered %d entries, want %d", len(recovered), n)
	}
	foreign := 0
	for _, e := range entries[before:] {
		if e.Outcome == "foreign" && e.Details["version"] == float64(n+1) && e.Details["why"] != "" {
			foreign++
		}
	}
	if foreign != 1 {
		t.Fatalf("%d foreign entries for the forged version, want 1", foreign)
	}
	e := recovered[1002]
	if e.Actor != "crashed-bot (0123456789abcdef)" || e.Details["reason"] != "outage at 1002" || e.Details["emergency"] != true || e.Details["committedAt"] == nil {
		t.Fatalf("recovered entry: %+v", e)
	}
	if logs.FilterMessage("audit reconciliation done").Len() != 1 || logs.FilterMessage("committed changesets without audit entries: recording them").Len() != 1 {
		t.Fatalf("reconciliation not logged: %v", logs.All())
	}
	if res := f.verify(t); !res.OK {
		t.Fatalf("verify after reconciliation: %+v", res)
	}
	// The emergency past version 1,000 is listed (the index was rebuilt).
	_, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/emergencies?reviewed=false", "")
	if !strings.Contains(body, `"version": 1002`) || !strings.Contains(body, "outage at 1002") {
		t.Fatalf("emergency past 1,000 not listed: %.500s", body)
	}
	// The index loses the entry (a lost write, a lost bucket): the next
	// start restores it from the chain, reading only that changeset, and
	// records nothing twice.
	kv, err := f.js.KeyValue(ctx, EmergenciesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, emergencyKey("dev", 1002)); err != nil {
		t.Fatal(err)
	}
	if _, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/emergencies", ""); strings.Contains(body, `"version": 1002`) {
		t.Fatal("index entry not removed")
	}
	_, logs3 := f.second(t)
	if d := logs3.FilterMessage("audit reconciliation done").All(); len(d) != 1 || d[0].ContextMap()["recovered"] != int64(0) || d[0].ContextMap()["emergenciesIndexed"] != int64(1) {
		t.Fatalf("third start: %v", d)
	}
	if _, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/emergencies", ""); !strings.Contains(body, `"version": 1002`) {
		t.Fatalf("index not rebuilt: %.300s", body)
	}
	_ = s2
}

// TestTwoReplicasOneChain: two control planes appending at once extend one
// chain (expected-last-sequence, re-link after a lost race) and it verifies.
func TestTwoReplicasOneChain(t *testing.T) {
	f := setup(t)
	s2, _ := f.second(t)
	ctx := context.Background()
	const each = 25
	done := make(chan struct{})
	for _, s := range []*Server{f.srv, s2} {
		go func(s *Server) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < each; i++ {
				s.record(ctx, principal{}, "test", "dev", fmt.Sprint(i), "ok", nil)
			}
		}(s)
	}
	<-done
	<-done
	entries := f.auditEntries(t)
	if len(entries) != 2*each {
		t.Fatalf("%d entries, want %d", len(entries), 2*each)
	}
	if res := f.verify(t); !res.OK {
		t.Fatalf("verify: %+v", res)
	}
}
