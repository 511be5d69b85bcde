package flagsync

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// switchable is the control plane's address as a sidecar sees it; the test
// points it at another control plane (a restore from backup).
type switchable struct{ target atomic.Pointer[url.URL] }

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	httputil.NewSingleHostReverseProxy(s.target.Load()).ServeHTTP(w, r)
}

func (s *switchable) point(t *testing.T, api string) {
	u, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	s.target.Store(u)
}

// TestSidecarConvergesToTheControlPlanesTruth: the control plane behind the
// sidecar's address is replaced by one restored from a backup (a lower
// version) or one that diverged at the same version. The sidecar takes the
// control plane's signed snapshot, even to a lower version, and counts it.
func TestSidecarConvergesToTheControlPlanesTruth(t *testing.T) {
	cases := []struct {
		name string
		// commits on the sidecar's original control plane and on the
		// replacement, as performance-mode default variants
		before, after []string
		want          string
	}{
		{"restore from backup (lower version)", []string{"fast", "safe"}, nil, "balanced"},
		{"same version, another flag set", []string{"safe"}, []string{"fast"}, "fast"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startCluster(t), startCluster(t)
			// The replacement knows the sidecar's token, as a restored one would.
			if err := b.toks.Import(t.Context(), a.token, "sidecar", map[string]string{"dev": "viewer"}); err != nil {
				t.Fatal(err)
			}
			for _, v := range tc.before {
				a.setDefault(t, v)
			}
			for _, v := range tc.after {
				b.setDefault(t, v)
			}
			front := &switchable{}
			front.point(t, a.api)
			srv := httptest.NewServer(front)
			t.Cleanup(srv.Close)
			// Polling only: the replacement's NATS is another server.
			dir := t.TempDir()
			s := startSidecar(t, RemoteOptions{ServerURL: srv.URL, Token: a.token, StateDir: dir, TrustKeys: []sign.PublicKey{a.key.Public(), b.key.Public()}})
			wantA := uint64(1 + len(tc.before))
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if s.version() != wantA || s.perf() != tc.before[len(tc.before)-1] {
					return fmt.Errorf("serves %s at v%d", s.perf(), s.version())
				}
				return nil
			})
			front.point(t, b.api)
			wantB := uint64(1 + len(tc.after))
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if s.version() != wantB || s.perf() != tc.want {
					return fmt.Errorf("serves %s at v%d, want %s at v%d", s.perf(), s.version(), tc.want, wantB)
				}
				return nil
			})
			head, _ := b.store.Head(t.Context(), "dev")
			if st := s.r.Status().(RemoteStatus); st.Hash != head.Hash {
				t.Fatalf("sidecar hash %s, control plane %s", st.Hash, head.Hash)
			}
			if n := testutil.ToFloat64(s.r.v.mRewinds); n != 1 {
				t.Fatalf("pennon_sync_rewinds_total = %v, want 1", n)
			}
			// The disk copy follows: the control plane's truth is newer in
			// install order even at a lower version.
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if f, err := readLKGFile(dir, "dev"); err != nil || f.rec.Version != wantB || f.rec.Hash != head.Hash {
					return fmt.Errorf("disk copy not the control plane's v%d %s yet (%v)", wantB, head.Hash, err)
				}
				return nil
			})
		})
	}
}

// TestGapIsCaughtUpByReplayingSignedChangesets: a sidecar that receives
// version v+3 while serving v replays v+1 and v+2 from the control plane's
// signed changesets (each verified) instead of downloading a snapshot.
func TestGapIsCaughtUpByReplayingSignedChangesets(t *testing.T) {
	c := startCluster(t)
	// No NATS and no polling during the test: the test hands the sidecar
	// the pushed message itself.
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, Token: c.token, TrustKeys: []sign.PublicKey{c.key.Public()},
		PollInterval: time.Hour, ReconcileEvery: time.Hour})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != 1 {
			return fmt.Errorf("version %d", s.version())
		}
		return nil
	})
	polls := testutil.ToFloat64(s.r.mApplied.WithLabelValues("poll"))
	c.setDefault(t, "fast")
	c.setDefault(t, "balanced")
	last := c.setDefault(t, "safe")
	js, _ := jetstream.New(natsrun.ConnectTest(t, c.ns))
	stream, _ := js.Stream(t.Context(), config.StreamName("dev"))
	raw, err := stream.GetMsg(t.Context(), last)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(config.LiveSubject("dev"))
	m.Data = raw.Data
	m.Header = raw.Header
	m.Header.Set("Nats-Sequence", fmt.Sprint(last))
	s.r.onChangeset(t.Context(), m)
	if s.version() != last || s.perf() != "safe" {
		t.Fatalf("after the gap: %s at v%d, want safe at v%d", s.perf(), s.version(), last)
	}
	if n := testutil.ToFloat64(s.r.mApplied.WithLabelValues("catchup")); n != 2 {
		t.Fatalf("applied by catch-up: %v, want 2", n)
	}
	if n := testutil.ToFloat64(s.r.mApplied.WithLabelValues("poll")); n != polls {
		t.Fatalf("a snapshot was taken (%v polls applied, had %v): catch-up should have covered the gap", n, polls)
	}
	if n := testutil.ToFloat64(s.r.mGaps); n != 1 {
		t.Fatalf("gaps counted %v, want 1", n)
	}
}
