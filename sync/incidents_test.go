package flagsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/sign"
)

// runWithIncidents runs a Remote with a recorder attached before it starts.
func runWithIncidents(t *testing.T, o RemoteOptions) *incident.Recorder {
	t.Helper()
	o.Env, o.PollInterval, o.HTTPTimeout = "dev", 50*time.Millisecond, 300*time.Millisecond
	r, err := NewRemote(o)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := incident.NewRecorder(incident.RecorderOptions{Env: "dev", Source: r.ID(), PushExpected: r.PushConfigured(), Sync: r.IncidentConditions})
	if err != nil {
		t.Fatal(err)
	}
	r.SetIncidents(rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

func waitRecord(t *testing.T, rec *incident.Recorder, kind string, ok func(r incident.Record) bool) {
	t.Helper()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, r := range rec.Open() {
			if r.Kind == kind && ok(r) {
				return nil
			}
		}
		return fmt.Errorf("no matching %s record: %+v", kind, rec.Open())
	})
}

// Sync's degradations reach the recorder: forged snapshots are counted as
// rejections (with their source and reason), and an unreachable control
// plane opens the breaker.
func TestIncidentHooksInSync(t *testing.T) {
	t.Run("forged snapshot", func(t *testing.T) {
		c := startCluster(t)
		evil, _ := config.Parse([]byte(`{"flags":{"performance-mode":{"state":"ENABLED","variants":{"fast":"fast"},"defaultVariant":"fast"}}}`))
		proxy := mitm(t, c.api, func(rec *config.SnapshotRecord) { rec.Document, rec.Hash = evil.Canonical(), evil.Hash() })
		rec := runWithIncidents(t, RemoteOptions{ServerURL: proxy, Token: c.token, TrustKeys: []sign.PublicKey{c.key.Public()}})
		waitRecord(t, rec, incident.KindSignatureRejected, func(r incident.Record) bool {
			return r.Count >= 2 && len(r.Detail) == 1 && r.Detail[0] == "snapshot: "+whyBadSignature+" (v1)"
		})
	})
	t.Run("control plane unreachable", func(t *testing.T) {
		rec := runWithIncidents(t, RemoteOptions{ServerURL: "http://127.0.0.1:1", Token: "x"})
		waitRecord(t, rec, incident.KindBreakerOpen, func(r incident.Record) bool {
			return r.Count == 3 && r.AtStart.Breaker == "open" && r.Reason != ""
		})
	})
}
