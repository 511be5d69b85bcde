package config

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// snapshotTestStore is a signing store on a real embedded JetStream whose
// logs the test reads, with env "dev" created.
func snapshotTestStore(t *testing.T, every int) (*Store, *natsrun.Server, *observer.ObservedLogs) {
	t.Helper()
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	srv := natsrun.StartTest(t)
	s := openTestStore(t, srv, StoreOptions{SnapshotEvery: every, Signer: key, Logger: zap.New(core)})
	if err := s.CreateEnv(context.Background(), EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	return s, srv, logs
}

// commitN commits n one-flag changesets to "dev" and returns the last
// version; each must return within 10 s whatever the snapshot writes do.
func commitN(t *testing.T, s *Store, n int) uint64 {
	t.Helper()
	done := make(chan error, 1)
	var last uint64
	go func() {
		for range n {
			head, err := s.Head(context.Background(), "dev")
			if err != nil {
				done <- err
				return
			}
			cs, err := s.Commit(context.Background(), &Changeset{Env: "dev", Author: "t",
				Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(int(head.Version)), BaseVersion: head.FlagVersion("n")}}})
			if err != nil {
				done <- err
				return
			}
			last = cs.Version
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%d commits did not return within 10 s: the commit path waits for a snapshot write", n)
	}
	return last
}

// storedSnapshot is the record in KV for "dev" and the KV revision it has
// (the bucket's stream sequence: how many puts the bucket took).
func storedSnapshot(t *testing.T, s *Store) (*SnapshotRecord, uint64) {
	t.Helper()
	ent, err := s.snaps.Get(context.Background(), "dev")
	if err != nil {
		t.Fatalf("snapshot of dev: %v", err)
	}
	var rec SnapshotRecord
	if err := json.Unmarshal(ent.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return &rec, ent.Revision()
}

// TestSlowSnapshotWriteDoesNotHoldCommits: while a snapshot write is stuck
// (the environment's put lock is held, as a slow KV would hold it), commits
// keep returning, the due snapshots coalesce into the newest, and once
// the write goes through the newest is in KV.
func TestSlowSnapshotWriteDoesNotHoldCommits(t *testing.T) {
	ctx := context.Background()
	s, _, _ := snapshotTestStore(t, 2)
	s.snapw.putMu.Lock()
	s.snapw.putLock, s.snapw.written = map[string]*sync.Mutex{"dev": {}}, map[string]uint64{}
	stuck := s.snapw.putLock["dev"]
	s.snapw.putMu.Unlock()
	stuck.Lock()
	last := commitN(t, s, 8) // snapshots due at 2, 4, 6 and 8
	if last != 8 {
		t.Fatalf("last version %d, want 8", last)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := s.FlushSnapshots(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("flush while the write is stuck: %v, want the context's deadline", err)
	}
	stuck.Unlock()
	if err := s.FlushSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	rec, puts := storedSnapshot(t, s)
	if rec.Version != 8 {
		t.Fatalf("snapshot in KV at version %d, want 8 (the newest due)", rec.Version)
	}
	// The writer may have taken the first due snapshot before it stuck;
	// every later one coalesced into version 8.
	if puts > 2 {
		t.Fatalf("%d puts for snapshots due at 2, 4, 6, 8; want at most 2 (coalesced)", puts)
	}
	head, _ := s.Head(ctx, "dev")
	if rec.Hash != head.Hash {
		t.Fatalf("snapshot hash %s, head %s", rec.Hash, head.Hash)
	}
}

// TestFailingSnapshotWriteDoesNotBlockCommits: with the KV bucket refusing
// every value (its max value size shrunk to 16 bytes), commits succeed,
// the failure is logged once for the episode with env and version, and
// FlushSnapshots names it; when the bucket takes values again, the next
// due snapshot is written and the recovery logged.
func TestFailingSnapshotWriteDoesNotBlockCommits(t *testing.T) {
	ctx := context.Background()
	s, srv, logs := snapshotTestStore(t, 2)
	js := attacker(t, srv)
	bucket := func(maxValue int32) {
		t.Helper()
		if _, err := js.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SnapshotBucket, History: 1, Storage: jetstream.FileStorage, MaxValueSize: maxValue}); err != nil {
			t.Fatal(err)
		}
	}
	bucket(16)
	if last := commitN(t, s, 6); last != 6 {
		t.Fatalf("last version %d, want 6", last)
	}
	err := s.FlushSnapshots(ctx)
	if err == nil || !strings.Contains(err.Error(), "env dev: snapshot at version") {
		t.Fatalf("flush after failed writes: %v, want the env and version named", err)
	}
	warned := logs.FilterMessageSnippet("snapshot not written").All()
	if len(warned) != 1 {
		t.Fatalf("%d failure logs for one episode of 3 failed writes, want 1", len(warned))
	}
	if f := warned[0].ContextMap(); f["env"] != "dev" || f["version"] == nil || f["error"] == nil {
		t.Fatalf("failure log fields %v, want env, version and error", f)
	}
	if _, err := s.snaps.Get(ctx, "dev"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a snapshot reached KV through a bucket that refuses values: %v", err)
	}
	// Readers do not need the snapshot: a fresh one replays the log.
	fresh := openTestStore(t, srv, StoreOptions{})
	if h, err := fresh.Head(ctx, "dev"); err != nil || h.Version != 6 {
		t.Fatalf("fresh reader without a snapshot: %+v %v, want version 6", h, err)
	}

	bucket(64 << 20)
	if last := commitN(t, s, 2); last != 8 {
		t.Fatalf("last version %d, want 8", last)
	}
	if err := s.FlushSnapshots(ctx); err != nil {
		t.Fatalf("flush after the bucket recovered: %v", err)
	}
	if rec, _ := storedSnapshot(t, s); rec.Version != 8 {
		t.Fatalf("snapshot in KV at version %d, want 8", rec.Version)
	}
	if n := len(logs.FilterMessageSnippet("snapshot written again").All()); n != 1 {
		t.Fatalf("%d recovery logs, want 1", n)
	}
	if n := len(logs.FilterMessageSnippet("snapshot not written").All()); n != 1 {
		t.Fatalf("%d failure logs in all, want 1", n)
	}
}

// TestCloseFlushesSnapshots: Close returns once the due snapshot is in KV,
// and a commit after Close writes its due snapshot before returning.
func TestCloseFlushesSnapshots(t *testing.T) {
	ctx := context.Background()
	s, _, _ := snapshotTestStore(t, 1)
	commitN(t, s, 1)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, _ := storedSnapshot(t, s); rec.Version != 1 {
		t.Fatalf("after Close the snapshot is at version %d, want 1", rec.Version)
	}
	commitN(t, s, 1)
	if rec, _ := storedSnapshot(t, s); rec.Version != 2 {
		t.Fatalf("commit after Close: snapshot at version %d, want 2", rec.Version)
	}
}
