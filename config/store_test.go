package config

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/pennon-dev/pennon/internal/natsrun"
)

func openTestStore(t testing.TB, srv *natsrun.Server, o StoreOptions) *Store {
	t.Helper()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(context.Background(), js, o)
	if err != nil {
		t.Fatal(err)
	}
	// Runs before nc.Close (cleanups run last first), as an owner's
	// shutdown does; a test whose server is gone by then fails its
	// pending writes, which the test does not check.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), snapshotWriteTimeout)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func counterDef(n int) []byte {
	return []byte(fmt.Sprintf(`{"state":"ENABLED","variants":{"v":%d},"defaultVariant":"v"}`, n))
}

func TestCommitConflictsAndValidation(t *testing.T) {
	// Registered first, so it runs last: after the connections and the
	// server are closed, the store must have left no goroutine behind.
	preexisting := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, preexisting) })
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	s := openTestStore(t, srv, StoreOptions{SnapshotEvery: 2})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); !errors.Is(err, ErrEnvExists) {
		t.Fatalf("duplicate env: %v", err)
	}
	if err := s.CreateEnv(ctx, EnvSettings{Name: "Bad Name"}); err == nil {
		t.Fatal("invalid env name accepted")
	}
	cs, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(1)}, {Flag: "b", Op: OpPut, Definition: counterDef(1)}}})
	if err != nil || cs.Version != 1 || cs.PrevVersion != 0 {
		t.Fatalf("first commit: %+v %v", cs, err)
	}
	// Unrelated concurrent edits both succeed: each names its own base.
	if _, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "bob", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(2), BaseVersion: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "cat", Changes: []Change{{Flag: "b", Op: OpPut, Definition: counterDef(2), BaseVersion: 1}}}); err != nil {
		t.Fatal(err)
	}
	// A stale base on a touched flag is a conflict naming who changed it.
	_, err = s.Commit(ctx, &Changeset{Env: "dev", Author: "dan", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(9), BaseVersion: 1}}})
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) || ce.Conflicts[0].Author != "bob" || ce.Conflicts[0].CurrentVersion != 2 {
		t.Fatalf("conflict: %v", err)
	}
	before, _ := s.Head(ctx, "dev")
	// An invalid result is rejected whole and changes nothing.
	_, err = s.Commit(ctx, &Changeset{Env: "dev", Author: "eve", Changes: []Change{
		{Flag: "c", Op: OpPut, Definition: counterDef(1)},
		{Flag: "d", Op: OpPut, Definition: []byte(`{"state":"ENABLED","variants":{"on":true},"defaultVariant":"nope"}`)},
	}})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("validation: %v", err)
	}
	after, _ := s.Head(ctx, "dev")
	if after.Version != before.Version || after.Hash != before.Hash {
		t.Fatal("a rejected write changed the store")
	}
	hist, err := s.History(ctx, "dev", "a", 0, 10)
	if err != nil || len(hist) != 2 || hist[0].Author != "bob" {
		t.Fatalf("history: %v %v", hist, err)
	}
	// A second store (another replica, or a restart) sees the same head.
	s2 := openTestStore(t, srv, StoreOptions{})
	h2, err := s2.Head(ctx, "dev")
	if err != nil || h2.Version != 3 || h2.Hash != after.Hash {
		t.Fatalf("second store: %+v %v", h2, err)
	}
}

// TestConcurrentWritersNoLostUpdate has 32 writers, spread over two Store
// instances on one JetStream, increment one flag with read-modify-write and
// retry on conflict. Every increment must survive, and the recorded history
// of reads (Head) and conditional writes (Commit with a base version) must be
// linearizable against a single-register compare-and-set model.
func TestConcurrentWritersNoLostUpdate(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	stores := []*Store{openTestStore(t, srv, StoreOptions{}), openTestStore(t, srv, StoreOptions{})}
	if err := stores[0].CreateEnv(ctx, EnvSettings{Name: "load"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[0].Commit(ctx, &Changeset{Env: "load", Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(0)}}}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 32, 3
	start := time.Now()
	now := func() int64 { return time.Since(start).Nanoseconds() }
	var (
		wg      sync.WaitGroup
		histMu  sync.Mutex
		history []porcupine.Operation
	)
	record := func(op porcupine.Operation) {
		histMu.Lock()
		history = append(history, op)
		histMu.Unlock()
	}
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(id int, s *Store) {
			defer wg.Done()
			for i := 0; i < each; {
				call := now()
				head, err := s.Head(ctx, "load")
				if err != nil {
					errs <- err
					return
				}
				var n int
				fmt.Sscanf(string(head.Doc.Flag("n").Variants["v"]), "%d", &n)
				base := head.FlagVersion("n")
				record(porcupine.Operation{ClientId: id, Input: casIn{read: true}, Call: call, Output: casOut{version: base, value: n}, Return: now()})
				call = now()
				cs, err := s.Commit(ctx, &Changeset{Env: "load", Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(n + 1), BaseVersion: base}}})
				switch {
				case errors.Is(err, ErrConflict):
					// A conflict changes nothing; recording it would only widen
					// the linearizability search (its place is unconstrained).
					continue
				case err != nil:
					errs <- err
					return
				}
				record(porcupine.Operation{ClientId: id, Input: casIn{base: base, value: n + 1}, Call: call, Output: casOut{version: cs.Version}, Return: now()})
				i++
			}
		}(w, stores[w%2])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	head, err := stores[1].Head(ctx, "load")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(head.Doc.Flag("n").Variants["v"]); got != fmt.Sprint(writers*each) || head.Version != writers*each+1 {
		t.Fatalf("counter = %s at version %d, want %d at %d", got, head.Version, writers*each, writers*each+1)
	}
	if !porcupine.CheckOperations(casModel, history) {
		t.Fatalf("history of %d operations is not linearizable", len(history))
	}
}

// casIn and casOut are the operations of the linearizability model: a read
// of the flag (its version and value) or a write conditional on a base
// version that commits at a new version.
type casIn struct {
	read  bool
	base  uint64
	value int
}

type casOut struct {
	version uint64
	value   int
}

// casModel is one register with a version, starting where the test's first
// commit leaves it (version 1, value 0). Only flag n changes in the
// environment, so its flag version is the environment version.
var casModel = porcupine.Model{
	Init: func() interface{} { return casOut{version: 1} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in, out := state.(casOut), input.(casIn), output.(casOut)
		switch {
		case in.read:
			return out == st, st
		default:
			return st.version == in.base && out.version == st.version+1, casOut{version: out.version, value: in.value}
		}
	},
	DescribeOperation: func(input, output interface{}) string {
		return fmt.Sprintf("%+v -> %+v", input, output)
	},
}

func TestStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, KeysDir: filepath.Join(dir, "keys"), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	s := openTestStore(t, srv, StoreOptions{SnapshotEvery: 3})
	s.CreateEnv(ctx, EnvSettings{Name: "prod", Protected: true})
	for i := 0; i < 5; i++ {
		head, _ := s.Head(ctx, "prod")
		if _, err := s.Commit(ctx, &Changeset{Env: "prod", Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(i), BaseVersion: head.FlagVersion("n")}}}); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.Head(ctx, "prod")
	if err := s.FlushSnapshots(ctx); err != nil { // the snapshot of version 3, before the server stops
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2, err := natsrun.Start(natsrun.Options{DataDir: dir, KeysDir: filepath.Join(dir, "keys"), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv2.Shutdown(); srv2.WaitForShutdown() }()
	s2 := openTestStore(t, srv2, StoreOptions{})
	got, err := s2.Head(ctx, "prod")
	if err != nil || got.Version != 5 || got.Hash != want.Hash {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	env, _ := s2.Env(ctx, "prod")
	if !env.Protected {
		t.Fatal("env settings lost")
	}
}
