package config

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// BenchmarkStoreCommit measures sequential committed changesets per second
// (one flag put, conflict check, validation, CAS publish, ack) on an embedded
// JetStream, with and without SyncAlways (fsync per write).
func BenchmarkStoreCommit(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("SyncAlways=%v", sync), func(b *testing.B) {
			ctx := context.Background()
			srv, err := natsrun.Start(natsrun.Options{DataDir: b.TempDir(), SyncAlways: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			s := openTestStore(b, srv, StoreOptions{SnapshotEvery: 1000})
			if err := s.CreateEnv(ctx, EnvSettings{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
			commitOneFlag(b, s)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changesets/s")
		})
	}
}

// BenchmarkStoreCommitSigned is BenchmarkStoreCommit (SyncAlways off) with a
// signing key: the ed25519 signature per commit, and its check when the
// head is read back, cost next to nothing beside the JetStream round trip.
// Measured on the shared 2-core VM (-benchtime 2s): unsigned 1,380 changesets/s (725 µs, 540 allocs),
// signed 1,462 changesets/s (684 µs, 551 allocs): within the noise.
func BenchmarkStoreCommitSigned(b *testing.B) {
	key, err := sign.Generate()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    StoreOptions
	}{{"unsigned", StoreOptions{SnapshotEvery: 1000}}, {"signed", StoreOptions{SnapshotEvery: 1000, Signer: key}}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			srv, err := natsrun.Start(natsrun.Options{DataDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			s := openTestStore(b, srv, tc.o)
			if err := s.CreateEnv(ctx, EnvSettings{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
			commitOneFlag(b, s)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changesets/s")
		})
	}
}

// BenchmarkNextFlagVersions is the per-flag versions a commit derives for
// the new head (one flag put). Measured 2026-11-30, load 2.8, with the
// plain map and maps.Clone (before: the loop that inserted every entry into
// a new map): 32 µs / 0.43 ms / 3.5 ms at 1k / 10k / 100k flags (before
// 63 µs / 0.74 ms / 12.7 ms). The copy-on-write set, same run as
// maps.Clone (03:41, load 1.4): 2.3-4.7 µs at every size, where maps.Clone
// took 30 µs / 0.31-0.34 ms / 3.1 ms (bench/results/propagation.md).
func BenchmarkNextFlagVersions(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		fv := map[string]uint64{}
		for i := range n {
			fv[fmt.Sprintf("flag-%d", i)] = uint64(i)
		}
		cur := flagVersionsFrom(fv)
		cs := &Changeset{Version: uint64(n + 1), Changes: []Change{{Flag: "flag-10", Op: OpPut}}}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = nextFlagVersions(cur, cs)
			}
		})
	}
}

// BenchmarkStoreCommitFlags is one flag's commit (conflict check, Apply,
// per-flag versions, hash, signed CAS publish, ack) on an environment that
// already holds n flags, on an embedded JetStream. No KV snapshot falls due
// inside the loop (SnapshotEvery is past it), so this is the commit path's
// own cost; cpu-µs/op is the process's CPU time (the embedded server's
// included) per commit, from getrusage. At 100k flags, 2026-11-30 03:40
// (load 1.2-1.5), alternated with the build before per-flag versions were
// copy-on-write: 0.48-0.66 ms and 0.8-1.2 ms of CPU, before 4.0-4.6 ms and
// 6.5-7.4 ms (bench/results/propagation.md).
func BenchmarkStoreCommitFlags(b *testing.B) {
	key, err := sign.Generate()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ctx := context.Background()
			srv, err := natsrun.Start(natsrun.Options{DataDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			s := openTestStore(b, srv, StoreOptions{SnapshotEvery: 1 << 30, Signer: key})
			if err := s.CreateEnv(ctx, EnvSettings{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
			const per = 2500 // flags per loading changeset: stays under the 8 MiB payload limit
			for start := 0; start < n; start += per {
				cs := &Changeset{Env: "bench", Author: "bench"}
				for i := start; i < min(start+per, n); i++ {
					cs.Changes = append(cs.Changes, Change{Flag: fmt.Sprintf("flag-%d", i), Op: OpPut, Definition: counterDef(i)})
				}
				if _, err := s.Commit(ctx, cs); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := processCPU()
			commitOneFlag(b, s)
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// commitOneFlag commits b.N one-flag changesets to env "bench", each
// based on the one before, timing only them.
func commitOneFlag(b *testing.B, s *Store) {
	ctx := context.Background()
	var base uint64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cs, err := s.Commit(ctx, &Changeset{Env: "bench", Author: "bench", Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(i), BaseVersion: base}}})
		if err != nil {
			b.Fatal(err)
		}
		base = cs.Version
	}
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
