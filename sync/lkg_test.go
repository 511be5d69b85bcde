package flagsync

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/sign"
)

// heldWriter makes a sidecar's last-known-good writer wait inside a write
// while hold is set, so a test can pile up changes behind it; versions
// receives the version of every write that waited.
type heldWriter struct {
	mu       sync.Mutex
	hold     chan struct{}
	versions chan uint64
}

func (h *heldWriter) block() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = make(chan struct{})
	return h.hold
}

func (h *heldWriter) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.hold)
	h.hold = nil
}

func (h *heldWriter) beforeWrite(version uint64) {
	h.mu.Lock()
	hold := h.hold
	h.mu.Unlock()
	if hold != nil {
		h.versions <- version
		<-hold
	}
}

// TestLastKnownGoodWriterCoalescesAndFlushes runs a real sidecar with a
// state dir against a real control plane: a burst of 100 changesets
// arriving while a write is under way costs one more file, not 100; when
// Run returns the file holds the last version applied, even if a write
// was under way when it was told to stop; a cold start with the control
// plane gone serves that file; and the file's per-flag versions, built by
// the writer from the changesets, are the control plane's.
func TestLastKnownGoodWriterCoalescesAndFlushes(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	pin := []sign.PublicKey{c.key.Public()}
	held := &heldWriter{versions: make(chan uint64, 16)}
	held.block() // the first write (v1, from the bootstrap snapshot) waits
	s := startSidecarWith(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, StateDir: dir, TrustKeys: pin}, func(r *Remote) {
		r.lkg.beforeWrite = func(rec *config.SnapshotRecord) { held.beforeWrite(rec.Version) }
	})
	if v := <-held.versions; v != 1 {
		t.Fatalf("first write is v%d, want v1", v)
	}
	const burst = 100
	variants := []string{"fast", "safe", "balanced"}
	var last uint64
	for i := range burst {
		last = c.setDefault(t, variants[i%len(variants)])
	}
	waitVersion(t, s, last)
	held.release()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, writes := s.r.lkg.status(); writes < 2 {
			return fmt.Errorf("%d files written", writes)
		}
		return nil
	})
	if f, err := readLKGFile(dir, "dev"); err != nil || f.rec.Version != last {
		t.Fatalf("second write is not v%d (%v)", last, err)
	}
	if _, writes := s.r.lkg.status(); writes != 2 {
		t.Fatalf("%d files written for the bootstrap and a burst of %d changesets, want 2 (the first and the newest)", writes, burst)
	}
	head, err := c.store.Head(t.Context(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := readLKGFile(dir, "dev")
	// What vouches for the copy: the pushed changeset's signed proof, or,
	// when a loaded host made the sidecar take the version by snapshot
	// (a gap or a heartbeat saying it is behind), the record's own signature.
	vouched := f.Proof != nil && f.Proof.Version == last || f.Proof == nil && f.rec.Signature != ""
	if f.rec.Hash != head.Hash || !maps.Equal(f.rec.FlagVersions, maps.Collect(head.AllFlagVersions())) || !vouched {
		t.Fatalf("disk copy v%d %s flag versions %v proof %v signature %q; control plane v%d %s flag versions %v",
			f.rec.Version, f.rec.Hash, f.rec.FlagVersions, f.Proof != nil, f.rec.Signature, head.Version, head.Hash, maps.Collect(head.AllFlagVersions()))
	}

	// Shutdown while a write is under way and newer versions wait behind it.
	held.block()
	first := c.setDefault(t, "safe")
	if v := <-held.versions; v != first {
		t.Fatalf("held write is v%d, want v%d", v, first)
	}
	for _, v := range []string{"fast", "balanced", "fast"} {
		last = c.setDefault(t, v)
	}
	waitVersion(t, s, last)
	stopped := make(chan struct{})
	go func() { defer close(stopped); s.stop() }()
	held.release()
	<-stopped
	f, err = readLKGFile(dir, "dev")
	if err != nil || f.rec.Version != last {
		t.Fatalf("after Run returned the disk copy is v%d (%v), the sidecar applied v%d", f.rec.Version, err, last)
	}
	c.stop()

	// Cold start with the control plane gone: the copy written serves.
	cold := startSidecar(t, RemoteOptions{ServerURL: "http://127.0.0.1:1", Token: c.token, StateDir: dir, TrustKeys: pin})
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if state(cold) != StateDisk || cold.version() != last || cold.perf() != "fast" {
			return fmt.Errorf("cold start: state %s, %s at v%d; want disk, fast at v%d", state(cold), cold.perf(), cold.version(), last)
		}
		return nil
	})
}

// TestLastKnownGoodWriteFailureReported: a state dir that cannot be written
// is reported in Status (lastKnownGoodError) and logged once per streak of
// failures, not once per change; once it can be written again the next
// change is written, the error clears and the recovery is logged once.
func TestLastKnownGoodWriteFailureReported(t *testing.T) {
	cases := []struct {
		name     string
		breakDir func(t *testing.T, dir string) // makes dir unwritable
		fix      func(t *testing.T, dir string)
	}{
		{"state dir path is a file", func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, dir string) {
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"read-only directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			if f, err := os.CreateTemp(dir, "probe-"); err == nil { // root ignores permissions
				f.Close()
				os.Remove(f.Name())
				t.Skip("this process may write into a read-only directory (root); the case above covers the failure path")
			}
		}, func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t)
			dir := filepath.Join(t.TempDir(), "state")
			tc.breakDir(t, dir)
			core, logs := observer.New(zap.InfoLevel)
			s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, StateDir: dir, Logger: zap.New(core),
				TrustKeys: []sign.PublicKey{c.key.Public()}})
			waitVersion(t, s, 1)
			var last uint64
			for _, v := range []string{"safe", "fast", "balanced"} {
				last = c.setDefault(t, v)
				waitVersion(t, s, last)
			}
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				s.r.lkg.mu.Lock()
				failures := s.r.lkg.failures
				s.r.lkg.mu.Unlock()
				if failures < 2 {
					return fmt.Errorf("%d failed writes so far", failures)
				}
				return nil
			})
			if st := remoteStatus(s); !strings.Contains(st.DiskError, "not written") {
				t.Fatalf("status lastKnownGoodError = %q, want the write error", st.DiskError)
			}
			if n := logs.FilterMessageSnippet("last-known-good copy not written").Len(); n != 1 {
				t.Fatalf("write failure logged %d times, want once for the streak", n)
			}

			tc.fix(t, dir)
			last = c.setDefault(t, "safe")
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if f, err := readLKGFile(dir, "dev"); err != nil || f.rec.Version != last {
					return fmt.Errorf("disk copy not at v%d yet (%v)", last, err)
				}
				if st := remoteStatus(s); st.DiskError != "" {
					return fmt.Errorf("status still reports %q", st.DiskError)
				}
				return nil
			})
			if n := logs.FilterMessage("last-known-good copy written again").Len(); n != 1 {
				t.Fatalf("recovery logged %d times, want once", n)
			}
		})
	}
}

func waitVersion(t *testing.T, s *sidecar, v uint64) {
	t.Helper()
	checkfor.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if s.version() != v {
			return fmt.Errorf("sidecar at v%d, want v%d", s.version(), v)
		}
		return nil
	})
}

// TestLastKnownGoodBurstIsPaced: without anything holding the writer, a
// burst of 100 changesets is written at most once per lkgMinRest (plus the
// first and the last), however fast the disk is.
func TestLastKnownGoodBurstIsPaced(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, StateDir: dir, TrustKeys: []sign.PublicKey{c.key.Public()}})
	waitVersion(t, s, 1)
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, writes := s.r.lkg.status(); writes != 1 {
			return fmt.Errorf("%d files written, want the bootstrap's", writes)
		}
		return nil
	})
	start := time.Now()
	var last uint64
	for i := range 100 {
		last = c.setDefault(t, []string{"fast", "safe", "balanced"}[i%3])
	}
	checkfor.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if f, err := readLKGFile(dir, "dev"); err != nil || f.rec.Version != last {
			return fmt.Errorf("disk copy not at v%d yet (%v)", last, err)
		}
		return nil
	})
	elapsed := time.Since(start)
	_, writes := s.r.lkg.status()
	if bound := 1 + int(elapsed/lkgMinRest) + 2; writes > bound || writes >= 100 {
		t.Fatalf("%d files written for 100 changesets in %v, want at most %d (one per %v)", writes, elapsed.Round(time.Millisecond), bound, lkgMinRest)
	}
	t.Logf("100 changesets in %v: %d files written", elapsed.Round(time.Millisecond), writes-1)
}
