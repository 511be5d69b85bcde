package flagsync

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// TestSidecarsAcrossTheHashUpgrade is a fleet in the middle of the hash
// format upgrade (docs/config.md, "Canonical form and hash"): sidecars of
// this release, a control plane of this release, and a replica from before
// the tree format committing with the same key and "sha256:" hashes. A
// sidecar applies a legacy-signed changeset and reports the signed string,
// so the control plane's heartbeats (which keep that version's signed hash)
// match and it keeps its lease; a sidecar starting then bootstraps from a
// snapshot carrying the legacy hash; a legacy hash that is not the result's
// is rejected as drift and the sidecar converges to the control plane; the
// next version committed by this release is followed in the tree format.
func TestSidecarsAcrossTheHashUpgrade(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	o := RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, TrustKeys: []sign.PublicKey{c.key.Public()}}
	s := startSidecar(t, o)
	waitFor := func(s *sidecar, v uint64, hash, perf string) {
		t.Helper()
		checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			st := s.r.Status().(RemoteStatus)
			if st.State != StatePush || s.version() != v || st.Hash != hash || s.perf() != perf || !st.LeaseValid {
				return fmt.Errorf("state %s v%d hash %s lease %v performance-mode %s; want push v%d %s %s", st.State, s.version(), st.Hash, st.LeaseValid, s.perf(), v, hash, perf)
			}
			return nil
		})
	}
	head, err := c.store.Head(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(s, 1, head.Hash, "balanced")

	js, err := jetstream.New(natsrun.ConnectTest(t, c.ns))
	if err != nil {
		t.Fatal(err)
	}
	// oldCommit is the replica from before the tree format: it signs the
	// legacy hash of what it computed (hashOf: of the result, or not).
	oldCommit := func(variant string, hashOf func(result *config.Document) string) string {
		t.Helper()
		head, err := c.store.Head(ctx, "dev")
		if err != nil {
			t.Fatal(err)
		}
		def := fmt.Sprintf(`{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":%q}`, variant)
		cs := &config.Changeset{Env: "dev", Version: head.Version + 1, PrevVersion: head.Version, Author: "old replica", Time: time.Now().UTC(),
			Changes: []config.Change{{Flag: "performance-mode", Op: config.OpPut, Definition: []byte(def), BaseVersion: head.FlagVersion("performance-mode")}}}
		next, err := head.Doc.Apply(cs)
		if err != nil {
			t.Fatal(err)
		}
		cs.Hash = hashOf(next)
		m := nats.NewMsg(config.LogSubject("dev"))
		m.Data, _ = json.Marshal(cs)
		m.Header.Set(config.SignatureHeader, c.key.Sign(sign.PurposeChangeset, m.Data))
		if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(head.Version)); err != nil {
			t.Fatal(err)
		}
		return config.LegacyDocumentHash(next.Canonical())
	}
	legacy2 := oldCommit("safe", func(d *config.Document) string { return config.LegacyDocumentHash(d.Canonical()) })
	waitFor(s, 2, legacy2, "safe")

	late := startSidecar(t, o)
	waitFor(late, 2, legacy2, "safe")

	// Signed, but its legacy hash is not the result's: drift, not served
	// from the changeset; the control plane's snapshot of v3 (the state it
	// replayed, in the format v3 was signed in) is.
	legacy3 := oldCommit("fast", func(*config.Document) string { return legacy2 })
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := lastRejection(s); r == nil || r.Kind != rejectChangeset || r.Why != whyHashMismatch || r.Version != 3 {
			return fmt.Errorf("last rejection %+v, want changeset v3 %s", r, whyHashMismatch)
		}
		return nil
	})
	waitFor(s, 3, legacy3, "fast")

	v := c.setDefault(t, "balanced")
	head, _ = c.store.Head(ctx, "dev")
	if !strings.HasPrefix(head.Hash, "sha256t1:") {
		t.Fatalf("committed now with hash %s, want the tree format", head.Hash)
	}
	for _, car := range []*sidecar{s, late} {
		waitFor(car, v, head.Hash, "balanced")
	}
}
