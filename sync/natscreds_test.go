package flagsync

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/faultnet"
)

func remoteStatus(s *sidecar) RemoteStatus { return s.r.Status().(RemoteStatus) }

// Sidecar credentials are short-lived: the sidecar renews them before they
// expire and stays on push, receiving changes throughout.
func TestCredentialRenewalKeepsPush(t *testing.T) {
	c := startCluster(t, func(o *control.Options) { o.SidecarCredentialTTL = 3 * time.Second })
	core, logs := observer.New(zap.InfoLevel)
	// A generous silence threshold: this test is about renewal, not about
	// heartbeats delayed on a loaded machine.
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, Logger: zap.New(core), SilenceAfter: 2 * time.Second})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := remoteStatus(s); st.State != StatePush || st.NATSCredsExp == nil {
			return fmt.Errorf("state %s, credentials %v", st.State, st.NATSCredsExp)
		}
		return nil
	})
	first := *remoteStatus(s).NATSCredsExp
	// Outlive two credential lifetimes, committing as we go.
	deadline := time.Now().Add(7 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		v := c.setDefault(t, []string{"fast", "safe"}[i%2])
		checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if s.version() != v {
				return fmt.Errorf("sidecar at %d, want %d", s.version(), v)
			}
			return nil
		})
		time.Sleep(500 * time.Millisecond) // pacing between commits, not waiting for a condition
	}
	st := remoteStatus(s)
	if !st.NATSCredsExp.After(first.Add(3 * time.Second)) {
		t.Fatalf("credentials not renewed: first expiry %v, now %v", first, st.NATSCredsExp)
	}
	if st.State != StatePush || st.Transitions[StatePolling] > 0 {
		for _, e := range logs.FilterMessage("sync state changed").All() {
			t.Log(e.ContextMap())
		}
		t.Fatalf("renewal disturbed push: state %s, transitions %v", st.State, st.Transitions)
	}
	if st.AuthError != "" {
		t.Fatalf("auth error after renewals: %s", st.AuthError)
	}
}

// A wrong token is logged once at error level, named in /readyz, and the
// sidecar does not hammer the control plane for credentials.
func TestWrongTokenReportedOnce(t *testing.T) {
	c := startCluster(t)
	core, logs := observer.New(zap.InfoLevel)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: "pennon_wrong", Logger: zap.New(core)})
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		ok, detail := s.r.Ready()
		if ok || !strings.Contains(detail, "refused") || !strings.Contains(detail, "401") {
			return fmt.Errorf("ready=%v %q", ok, detail)
		}
		return nil
	})
	time.Sleep(time.Second) // let several polls and NATS reconnect attempts happen
	n := 0
	for _, e := range logs.FilterLevelExact(zap.ErrorLevel).All() {
		if strings.Contains(e.Message, "refused this sidecar's API token") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("want the refused token logged exactly once, got %d: %v", n, logs.All())
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "pennon_wrong") {
				t.Fatalf("token leaked into a log line: %s %v", e.Message, e.Context)
			}
		}
	}
}

// Reports are bound to the sidecar that sent them: a sidecar's credentials
// cannot speak for another sidecar, nor for another environment, and a
// sidecar that goes silent is listed as lost instead of disappearing.
func TestReportsAuthenticatedAndLostSidecarsListed(t *testing.T) {
	c := startCluster(t)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, ID: "pod-real"})
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, rep := range c.reg.List("dev") {
			if rep.ID == "pod-real" && rep.Via == "nats" && !rep.Lost && rep.Version == s.version() {
				return nil
			}
		}
		return fmt.Errorf("pod-real not listed: %+v", c.reg.List("dev"))
	})

	// An attacker holding pod-evil's credentials claims to be pod-victim.
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	own := config.SidecarSubject("dev") + "." + c.ns.Keys.ReportToken("dev", "pod-evil")
	tok, _, err := c.ns.Keys.Sidecar(pub, "evil", []string{config.LiveSubject("dev")}, own, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.nats, nats.UserJWT(func() (string, error) { return tok, nil }, kp.Sign))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	forged, _ := json.Marshal(config.SidecarReport{ID: "pod-victim", Env: "dev", Version: 999, State: StatePush})
	wrongEnv, _ := json.Marshal(config.SidecarReport{ID: "pod-evil", Env: "prod", Version: 1, State: StatePush})
	_ = nc.Publish(own, forged)
	_ = nc.Publish(own, wrongEnv)
	_ = nc.Publish(config.SidecarSubject("dev")+"."+c.ns.Keys.ReportToken("dev", "pod-victim"), forged) // refused by NATS
	_ = nc.Publish(own, []byte("not json"))
	honest, _ := json.Marshal(config.SidecarReport{ID: "pod-evil", Env: "dev", Version: 1, State: StatePolling})
	_ = nc.Publish(own, honest)
	_ = nc.Flush()
	checkfor.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, rep := range c.reg.List("dev") {
			if rep.ID == "pod-evil" {
				return nil
			}
		}
		return fmt.Errorf("honest report not listed")
	})
	for _, rep := range c.reg.List("dev") {
		if rep.ID == "pod-victim" {
			t.Fatalf("forged report accepted: %+v", rep)
		}
	}
	if got := c.reg.List("prod"); len(got) != 0 {
		t.Fatalf("report for another environment accepted: %+v", got)
	}
	if !c.reg.Record(config.SidecarReport{ID: "poller", Env: "dev"}, "http") || c.reg.Record(config.SidecarReport{ID: "poller", Env: "nope"}, "http") {
		t.Fatal("Record must accept existing environments and only those")
	}

	// pod-real goes silent: listed as lost, not dropped.
	s.stop()
	checkfor.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, rep := range c.reg.List("dev") {
			if rep.ID == "pod-real" && rep.Lost {
				return nil
			}
		}
		return fmt.Errorf("pod-real not lost: %+v", c.reg.List("dev"))
	})
}

// The registry's memory is bounded: past MaxSidecars the longest-silent
// entry makes room.
func TestRegistryBounded(t *testing.T) {
	reg, err := NewRegistry(nil, RegistryOptions{MaxSidecars: 3, Envs: func(context.Context) ([]string, error) { return []string{"dev"}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		reg.Record(config.SidecarReport{ID: fmt.Sprint("pod-", i), Env: "dev"}, "http")
	}
	got := reg.List("dev")
	if len(got) != 3 || got[0].ID != "pod-7" {
		t.Fatalf("want the 3 newest, got %+v", got)
	}
	for _, bad := range []config.SidecarReport{{ID: "", Env: "dev"}, {ID: "has space", Env: "dev"}, {ID: strings.Repeat("x", 300), Env: "dev"}} {
		if reg.Record(bad, "http") {
			t.Fatalf("malformed report accepted: %q", bad.ID)
		}
	}
}

// A sidecar without NATS (polling only) is listed in the fleet view through
// the reports its polls carry.
func TestPollingSidecarListed(t *testing.T) {
	c := startCluster(t)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, Token: c.token, ID: "pod-poller"})
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, rep := range c.reg.List("dev") {
			if rep.ID == "pod-poller" && rep.Via == "http" && rep.State == StatePolling && rep.Version == s.version() && s.version() > 0 {
				return nil
			}
		}
		return fmt.Errorf("pod-poller not listed: %+v", c.reg.List("dev"))
	})
}

// A NATS path that stalls (the connection stays up, nothing arrives) moves
// the sidecar off push: the state follows the heartbeats, not TCP. Changes
// still arrive by polling, and /readyz says so.
func TestStalledNATSLeavesPush(t *testing.T) {
	c := startCluster(t)
	fp, err := faultnet.New(strings.TrimPrefix(c.nats, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: "nats://" + fp.Addr(), Token: c.token})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if state(s) != StatePush {
			return fmt.Errorf("state %s", state(s))
		}
		return nil
	})
	fp.Stall()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		st := remoteStatus(s)
		// (The lease may stay valid: each successful poll renews it.)
		if st.State != StatePolling || !st.NATS {
			return fmt.Errorf("state %s, NATS connected %v", st.State, st.NATS)
		}
		return nil
	})
	if ok, detail := s.r.Ready(); !ok || !strings.Contains(detail, "polling") {
		t.Fatalf("readyz while stalled: %v %q", ok, detail)
	}
	v := c.setDefault(t, "fast")
	checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s.version() != v || state(s) != StatePolling {
			return fmt.Errorf("version %d state %s", s.version(), state(s))
		}
		return nil
	})
	fp.Unstall()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if state(s) != StatePush {
			return fmt.Errorf("state %s after the stall ended", state(s))
		}
		return nil
	})
}

// TestStoppingIsNotLosingPush: a sidecar on push that stops closes its own
// NATS connection, which calls the disconnect handler; that is no loss of
// push — no state change to polling, no incident, nothing logged as one.
func TestStoppingIsNotLosingPush(t *testing.T) {
	c := startCluster(t)
	core, logs := observer.New(zap.InfoLevel)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, Logger: zap.New(core), SilenceAfter: 2 * time.Second})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := state(s); st != StatePush {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
	s.stop()
	// The disconnect callback runs on nats.go's own goroutine, possibly
	// after Run returned: watch for it for a while (an absence has no
	// event to wait for).
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if st := remoteStatus(s); st.State != StatePush || st.Transitions[StatePolling] > 0 {
			t.Fatalf("after stopping: state %s, transitions %v", st.State, st.Transitions)
		}
	}
	for _, e := range logs.FilterMessage("sync state changed").All() {
		if e.ContextMap()["to"] == StatePolling {
			t.Fatalf("stopping logged a state change: %v", e.ContextMap())
		}
	}
	if n := logs.FilterMessage("incident opened").Len(); n > 0 {
		t.Fatalf("stopping opened %d incident(s)", n)
	}
}
