package flagsync

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/notify"
)

type recordingEmitter struct {
	mu     sync.Mutex
	events []notify.Event
}

func (e *recordingEmitter) Emit(_ context.Context, ev notify.Event) {
	e.mu.Lock()
	e.events = append(e.events, ev)
	e.mu.Unlock()
}

func TestRegistryRewindEvents(t *testing.T) {
	em := &recordingEmitter{}
	reg := prometheus.NewRegistry()
	r, err := NewRegistry(nil, RegistryOptions{Envs: func(context.Context) ([]string, error) { return []string{"prod"}, nil }, Notify: em, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		version uint64
		hash    string
		want    string // the rewind event's title, "" for none
	}{
		{"first report", 5, "aaaa", ""},
		{"forward", 6, "bbbb", ""},
		{"back to a lower version", 4, "cccc", "prod: sidecar pod-1 went back (version 6 → 4)"},
		{"the same state again: same episode", 4, "cccc", ""},
		{"same version, another hash", 4, "dddd", "prod: sidecar pod-1 went back (version 4, hash cccc → dddd)"},
		{"restart: nothing loaded yet", 0, "", ""},
		{"loaded after the restart", 3, "eeee", ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			em.mu.Lock()
			before := len(em.events)
			em.mu.Unlock()
			if !r.Record(config.SidecarReport{ID: "pod-1", Env: "prod", Version: st.version, Hash: st.hash, State: "push"}, "nats") {
				t.Fatal("report dropped")
			}
			em.mu.Lock()
			got := em.events[before:]
			em.mu.Unlock()
			switch {
			case st.want == "" && len(got) != 0:
				t.Fatalf("unexpected events %+v", got)
			case st.want != "" && (len(got) != 1 || got[0].Title != st.want):
				t.Fatalf("events %+v, want one titled %q", got, st.want)
			case st.want != "":
				e := got[0]
				if e.Type != notify.TypeRewind || e.Env != "prod" || e.Severity != notify.SeverityWarning || e.ID == "" || e.Data["sidecar"] != "pod-1" || e.Data["toVersion"] != st.version {
					t.Errorf("event %+v", e)
				}
			}
		})
	}
	if n := testutil.ToFloat64(r.fleet.rewinds.WithLabelValues("prod")); n != 2 {
		t.Errorf("pennon_fleet_rewinds_total = %v, want 2", n)
	}
}

func TestFleetGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := NewRegistry(nil, RegistryOptions{Envs: func(context.Context) ([]string, error) { return []string{"prod", "dev"}, nil }, Metrics: reg, LostAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range []config.SidecarReport{
		{ID: "a", Env: "prod", Version: 7, Hash: "h7"},
		{ID: "b", Env: "prod", Version: 6, Hash: "h6"},
		{ID: "c", Env: "prod", Version: 9, Hash: "h9"}, // will be lost: its version no longer counts as newest
		{ID: "d", Env: "dev", Version: 1, Hash: "h1"},
	} {
		r.Record(rep, "nats")
	}
	r.mu.Lock()
	c := r.byEnv["prod"]["c"]
	c.Time = time.Now().Add(-2 * time.Minute)
	r.byEnv["prod"]["c"] = c
	r.mu.Unlock()
	want := `
# HELP pennon_fleet_sidecars Sidecars known to the control plane by environment and state (live: reported within lost-after; lost: silent longer).
# TYPE pennon_fleet_sidecars gauge
pennon_fleet_sidecars{env="dev",state="live"} 1
pennon_fleet_sidecars{env="dev",state="lost"} 0
pennon_fleet_sidecars{env="prod",state="live"} 2
pennon_fleet_sidecars{env="prod",state="lost"} 1
# HELP pennon_fleet_sidecars_behind Live sidecars at a lower version than the newest version reported in their environment.
# TYPE pennon_fleet_sidecars_behind gauge
pennon_fleet_sidecars_behind{env="dev"} 0
pennon_fleet_sidecars_behind{env="prod"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pennon_fleet_sidecars", "pennon_fleet_sidecars_behind"); err != nil {
		t.Error(err)
	}
}

// TestRewindEventFromARestoredControlPlane: end to end, the control plane
// behind a polling sidecar's address is replaced by one restored from a
// backup (a lower version). The replacement's fleet registry hears the
// sidecar report its old version, then the restored one, and emits one
// rewind event naming both.
func TestRewindEventFromARestoredControlPlane(t *testing.T) {
	a, b := startCluster(t), startCluster(t)
	em := &recordingEmitter{}
	b.reg.o.Notify = em // before any report reaches b
	if err := b.toks.Import(t.Context(), a.token, "sidecar", map[string]string{"dev": "viewer"}); err != nil {
		t.Fatal(err)
	}
	a.setDefault(t, "fast")
	a.setDefault(t, "safe") // a is at version 3, b (the backup) at 1
	front := &switchable{}
	front.point(t, a.api)
	srv := httptest.NewServer(front)
	t.Cleanup(srv.Close)
	s := startSidecar(t, RemoteOptions{ServerURL: srv.URL, Token: a.token, ID: "pod-7", TrustKeys: []sign.PublicKey{a.key.Public(), b.key.Public()}})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != 3 {
			return fmt.Errorf("sidecar at v%d, want 3", s.version())
		}
		return nil
	})
	front.point(t, b.api)
	var got []notify.Event
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		em.mu.Lock()
		got = append([]notify.Event(nil), em.events...)
		em.mu.Unlock()
		if len(got) == 0 {
			return fmt.Errorf("no rewind event yet (sidecar at v%d)", s.version())
		}
		return nil
	})
	e := got[0]
	if len(got) != 1 || e.Type != notify.TypeRewind || e.Env != "dev" || e.Data["sidecar"] != "pod-7" ||
		e.Data["fromVersion"] != uint64(3) || e.Data["toVersion"] != uint64(1) || !strings.Contains(e.Title, "dev: sidecar pod-7 went back (version 3 → 1)") {
		t.Fatalf("events %+v, want one rewind of pod-7 from 3 to 1", got)
	}
}
