package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/internal/checkfor"
)

// TestServerWatchDir: pennon server --watch-dir applies DIR/<env>.json as
// a changeset authored by gitops, and refuses a watch dir that is not one.
func TestServerWatchDir(t *testing.T) {
	dir := t.TempDir()
	file, err := os.ReadFile("../../examples/checkout.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dev.json"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o := serverOptions{addr: "127.0.0.1:0", data: t.TempDir(), natsAddr: "127.0.0.1:0", replicas: 1, snapshotEvery: 20,
		envs: []string{"dev"}, heartbeat: time.Second, watchDir: dir, watchEvery: 50 * time.Millisecond}
	rs, err := startServer(ctx, o, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	checkfor.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		head, err := rs.Store.Head(ctx, "dev")
		if err != nil || head.Version < 1 {
			return fmt.Errorf("dev not applied yet (%v)", err)
		}
		return nil
	})
	cs, err := rs.Store.Changeset(ctx, "dev", 1)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Author != "gitops (gitops)" || cs.Evaluators["internalUser"] == nil || len(cs.Changes) != 6 {
		t.Fatalf("changeset: %s %v %d", cs.Author, cs.Evaluators, len(cs.Changes))
	}
	o.watchDir, o.data = filepath.Join(dir, "missing"), t.TempDir()
	if _, err := startServer(ctx, o, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "--watch-dir") {
		t.Fatalf("missing watch dir: %v", err)
	}
}
