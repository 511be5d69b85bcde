package config

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/pennon-dev/pennon/internal/natsrun"
)

// linIn and linOut are the operations of the per-flag model: a read of one
// flag (its flag version and value), or a put conditional on the flag
// version the writer read, which either commits at a new version or fails
// with a conflict.
type linIn struct {
	flag  string
	read  bool
	base  uint64
	value int
}

type linOut struct {
	version  uint64
	value    int
	conflict bool
}

// linModel is one versioned register per flag (partitioned by flag),
// starting at version 0 / value 0 before the flag exists; the setup commit
// that creates each flag is part of the history.
var linModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			f := op.Input.(linIn).flag
			if _, ok := by[f]; !ok {
				keys = append(keys, f)
			}
			by[f] = append(by[f], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() interface{} { return linOut{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in, out := state.(linOut), input.(linIn), output.(linOut)
		switch {
		case in.read:
			return out.version == st.version && out.value == st.value, st
		case out.conflict:
			// Rejected: only legal if the flag had moved past the base.
			return st.version != in.base, st
		default:
			// Accepted: only legal on an unchanged flag, and versions grow.
			if st.version != in.base || out.version <= st.version {
				return false, st
			}
			return true, linOut{version: out.version, value: in.value}
		}
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(linIn), output.(linOut)
		if in.read {
			return fmt.Sprintf("read %s -> v%d=%d", in.flag, out.version, out.value)
		}
		return fmt.Sprintf("cas %s base v%d := %d -> v%d conflict=%v", in.flag, in.base, in.value, out.version, out.conflict)
	},
}

// TestStoreLinearizable runs concurrent writers across two Store instances
// on one embedded JetStream, each reading a flag (Head) and putting it back
// incremented with the flag version it read as BaseVersion. Every read,
// accepted write and conflict is recorded with call/return times; the
// history must be linearizable against per-flag CAS registers, and the
// final state must equal the sequence of accepted writes (no lost update).
func TestStoreLinearizable(t *testing.T) {
	for _, tc := range []struct {
		name          string
		writers, each int
		flags         []string
	}{
		{"one-flag", 8, 3, []string{"a"}},
		{"three-flags", 12, 4, []string{"a", "b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			srv := natsrun.StartTest(t)
			stores := []*Store{openTestStore(t, srv, StoreOptions{}), openTestStore(t, srv, StoreOptions{})}
			if err := stores[0].CreateEnv(ctx, EnvSettings{Name: "lin"}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			now := func() int64 { return time.Since(start).Nanoseconds() }
			var (
				mu      sync.Mutex
				history []porcupine.Operation
				commits = map[string]int{}
			)
			record := func(op porcupine.Operation) {
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
			}
			for _, f := range tc.flags {
				call := now()
				cs, err := stores[0].Commit(ctx, &Changeset{Env: "lin", Changes: []Change{{Flag: f, Op: OpPut, Definition: counterDef(0)}}})
				if err != nil {
					t.Fatal(err)
				}
				record(porcupine.Operation{ClientId: 0, Input: linIn{flag: f, value: 0}, Call: call, Output: linOut{version: cs.Version}, Return: now()})
			}
			errs := make(chan error, tc.writers)
			var wg sync.WaitGroup
			for w := 0; w < tc.writers; w++ {
				wg.Add(1)
				go func(id int, s *Store) {
					defer wg.Done()
					for i, attempt := 0, 0; i < tc.each; attempt++ {
						if ctx.Err() != nil {
							errs <- fmt.Errorf("writer %d: %v after %d writes", id, ctx.Err(), i)
							return
						}
						f := tc.flags[(id+attempt)%len(tc.flags)]
						call := now()
						head, err := s.Head(ctx, "lin")
						if err != nil {
							errs <- err
							return
						}
						var n int
						fmt.Sscanf(string(head.Doc.Flag(f).Variants["v"]), "%d", &n)
						base := head.FlagVersion(f)
						record(porcupine.Operation{ClientId: id, Input: linIn{flag: f, read: true}, Call: call, Output: linOut{version: base, value: n}, Return: now()})
						call = now()
						cs, err := s.Commit(ctx, &Changeset{Env: "lin", Author: fmt.Sprint("w", id), Changes: []Change{{Flag: f, Op: OpPut, Definition: counterDef(n + 1), BaseVersion: base}}})
						switch {
						case errors.Is(err, ErrConflict):
							record(porcupine.Operation{ClientId: id, Input: linIn{flag: f, base: base, value: n + 1}, Call: call, Output: linOut{conflict: true}, Return: now()})
							continue
						case err != nil:
							errs <- err
							return
						}
						record(porcupine.Operation{ClientId: id, Input: linIn{flag: f, base: base, value: n + 1}, Call: call, Output: linOut{version: cs.Version}, Return: now()})
						mu.Lock()
						commits[f]++
						mu.Unlock()
						i++
					}
				}(w+1, stores[w%2])
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// No lost update: each flag's counter equals its accepted writes,
			// and the environment version counts setup + accepted writes.
			head, err := stores[1].Head(ctx, "lin")
			if err != nil {
				t.Fatal(err)
			}
			if want := uint64(len(tc.flags) + tc.writers*tc.each); head.Version != want {
				t.Fatalf("head version %d, want %d", head.Version, want)
			}
			for _, f := range tc.flags {
				if got := string(head.Doc.Flag(f).Variants["v"]); got != fmt.Sprint(commits[f]) {
					t.Fatalf("flag %s = %s after %d accepted writes", f, got, commits[f])
				}
			}
			switch res := porcupine.CheckOperationsTimeout(linModel, history, 10*time.Second); res {
			case porcupine.Ok:
			default:
				t.Fatalf("history of %d operations: %s", len(history), res)
			}
			t.Logf("%d operations linearizable; head v%d", len(history), head.Version)
		})
	}
}

// TestLinModelRejectsLostUpdate checks the checker: two puts accepted on
// the same base version (last-write-wins), or a read of a stale value after
// a write returned, must not pass.
func TestLinModelRejectsLostUpdate(t *testing.T) {
	seed := porcupine.Operation{ClientId: 0, Input: linIn{flag: "a"}, Call: 0, Output: linOut{version: 1}, Return: 1}
	for name, h := range map[string][]porcupine.Operation{
		"two accepted on one base": {seed,
			{ClientId: 1, Input: linIn{flag: "a", base: 1, value: 1}, Call: 2, Output: linOut{version: 2}, Return: 5},
			{ClientId: 2, Input: linIn{flag: "a", base: 1, value: 1}, Call: 3, Output: linOut{version: 3}, Return: 6},
		},
		"stale read after write": {seed,
			{ClientId: 1, Input: linIn{flag: "a", base: 1, value: 1}, Call: 2, Output: linOut{version: 2}, Return: 3},
			{ClientId: 2, Input: linIn{flag: "a", read: true}, Call: 4, Output: linOut{version: 1}, Return: 5},
		},
		"conflict on current base": {seed,
			{ClientId: 1, Input: linIn{flag: "a", base: 1, value: 1}, Call: 2, Output: linOut{conflict: true}, Return: 3},
		},
	} {
		if porcupine.CheckOperations(linModel, h) {
			t.Errorf("%s: accepted as linearizable", name)
		}
	}
}
