package config

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/internal/natsrun"
)

// crashChildEnv switches the test binary into the child role of
// TestKillLosesNoAcknowledgedChangeset: its value is the data dir.
const crashChildEnv = "PENNON_STORE_CRASH_CHILD"

// TestKillLosesNoAcknowledgedChangeset runs an embedded server with
// SyncAlways and a committing Store in a child process (this test binary,
// re-executed), stops it mid-load after some acknowledged commits — with
// SIGKILL (no shutdown, no flush) or, for contrast, SIGTERM handled as a
// clean stop — restarts the server on the same data dir in-process and
// checks: head >= last acknowledged version, versions are gapless 1..head,
// every version holds its content, and the document at head parses.
func TestKillLosesNoAcknowledgedChangeset(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	for _, tc := range []struct {
		name     string
		sig      syscall.Signal
		graceful bool // the child stops cleanly, so head == last ack exactly
	}{
		{"SIGKILL", syscall.SIGKILL, false},
		{"SIGTERM-clean-stop", syscall.SIGTERM, true},
	} {
		t.Run(tc.name, func(t *testing.T) { crashAndCheck(t, tc.sig, tc.graceful) })
	}
}

func crashAndCheck(t *testing.T, sig syscall.Signal, graceful bool) {
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
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	const wantAcks = 50
	var acked uint64
	sc := bufio.NewScanner(out)
	readAck := func() bool {
		if !sc.Scan() {
			return false
		}
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "ACK "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n != acked+1 {
				t.Fatalf("child said %q after ACK %d", line, acked)
			}
			acked = n
		}
		return true
	}
	for acked < wantAcks && readAck() {
	}
	if acked < wantAcks {
		t.Fatalf("child stopped after %d acknowledged commits: %v", acked, sc.Err())
	}
	// Signal while the child keeps committing.
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	// Every ACK line the child wrote before it died was acknowledged by
	// JetStream: read them all (EOF when the process is gone).
	for readAck() {
	}
	werr := cmd.Wait()
	waited = true
	if graceful && werr != nil {
		t.Fatalf("child did not stop cleanly on %v: %v", sig, werr)
	}
	t.Logf("%v after %d acknowledged changesets (child exit: %v)", sig, acked, werr)

	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, KeysDir: filepath.Join(dir, "keys"), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := openTestStore(t, srv, StoreOptions{})
	head, err := s.Head(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}
	if head.Version < acked {
		t.Fatalf("head is version %d after %v, but version %d was acknowledged", head.Version, sig, acked)
	}
	if graceful && head.Version != acked {
		t.Fatalf("clean stop: head is version %d, last acknowledged %d", head.Version, acked)
	}
	// The document at head parses and holds the head's counter.
	if head.Doc == nil {
		t.Fatal("no document at head")
	}
	if got := string(head.Doc.Flag("n").Variants["v"]); got != fmt.Sprint(head.Version) {
		t.Fatalf("head %d holds n = %s", head.Version, got)
	}
	// Gapless 1..head, each changeset chained to the previous one and
	// carrying the content that was committed at that version.
	css, err := s.Changesets(ctx, "crash", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(css)) != head.Version {
		t.Fatalf("%d changesets for head %d", len(css), head.Version)
	}
	for i, cs := range css {
		v := uint64(i + 1)
		if cs.Version != v || cs.PrevVersion != v-1 {
			t.Fatalf("changeset %d: version %d prev %d", v, cs.Version, cs.PrevVersion)
		}
		if len(cs.Changes) != 1 || string(cs.Changes[0].Definition) != string(counterDef(int(v))) {
			t.Fatalf("changeset %d holds %+v", v, cs.Changes)
		}
	}
	for _, v := range []uint64{1, acked / 2, acked, head.Version} {
		st, err := s.StateAt(ctx, "crash", v)
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		if got := string(st.Doc.Flag("n").Variants["v"]); got != fmt.Sprint(v) {
			t.Fatalf("state at version %d holds n = %s", v, got)
		}
	}
}

// crashChild commits until signalled, printing "ACK <version>" after each
// acknowledged commit. SIGTERM stops it cleanly (server shut down); it also
// stops by itself after 8s in case the parent never signals.
func crashChild(t *testing.T, dir string) {
	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, KeysDir: filepath.Join(dir, "keys"), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	s := openTestStore(t, srv, StoreOptions{SnapshotEvery: 7})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "crash"}); err != nil {
		t.Fatal(err)
	}
	var base uint64
	for ctx.Err() == nil {
		// A commit in flight when the context ends may or may not apply;
		// only what was printed counts as acknowledged.
		cs, err := s.Commit(context.Background(), &Changeset{Env: "crash", Author: "child", Changes: []Change{{Flag: "n", Op: OpPut, Definition: counterDef(int(base + 1)), BaseVersion: base}}})
		if err != nil {
			t.Fatal(err)
		}
		base = cs.Version
		fmt.Fprintf(os.Stdout, "ACK %d\n", cs.Version)
	}
}
