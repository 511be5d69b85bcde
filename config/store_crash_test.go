package config

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/internal/natsrun"
)

// crashChildEnv switches the test binary into the child role of
// TestKillLosesNoAcknowledgedChangeset: its value is the data dir.
const crashChildEnv = "PENNON_STORE_CRASH_CHILD"

// TestKillLosesNoAcknowledgedChangeset runs an embedded server with
// SyncAlways and a committing Store in a child process (this test binary,
// re-executed), kills it with SIGKILL mid-load after some acknowledged
// commits, restarts the server on the same data dir and checks that every
// acknowledged changeset is there with its content.
func TestKillLosesNoAcknowledgedChangeset(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillLosesNoAcknowledgedChangeset$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	const wantAcks = 40
	var acked uint64
	sc := bufio.NewScanner(out)
	for acked < wantAcks && sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "ACK "); ok {
			if acked, err = strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatalf("child said %q", line)
			}
		}
	}
	if acked < wantAcks {
		t.Fatalf("child stopped after %d acknowledged commits: %v", acked, sc.Err())
	}
	// SIGKILL while the child keeps committing: no shutdown, no flush.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true

	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	ctx := context.Background()
	s := openTestStore(t, srv.ClientURL(), StoreOptions{})
	head, err := s.Head(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}
	if head.Version < acked {
		t.Fatalf("head is version %d after the kill, but version %d was acknowledged", head.Version, acked)
	}
	for _, v := range []uint64{1, acked / 2, acked, head.Version} {
		st, err := s.StateAt(ctx, "crash", v)
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		if got := string(st.Doc.Flag("n").Variants["v"]); got != fmt.Sprint(v) {
			t.Fatalf("version %d holds n = %s", v, got)
		}
	}
}

// crashChild commits until killed (bounded to 20s in case the parent dies),
// printing "ACK <version>" after each acknowledged commit.
func crashChild(t *testing.T, dir string) {
	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := openTestStore(t, srv.ClientURL(), StoreOptions{SnapshotEvery: 7})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "crash"}); err != nil {
		t.Fatal(err)
	}
	var base uint64
	for ctx.Err() == nil {
		cs, err := s.Commit(ctx, &Changeset{Env: "crash", Author: "child", Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(int(base + 1)), BaseVersion: base}}})
		if err != nil {
			t.Fatal(err)
		}
		base = cs.Version
		fmt.Fprintf(os.Stdout, "ACK %d\n", cs.Version)
	}
}
