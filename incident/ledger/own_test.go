package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/incident"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/faultnet"
	"github.com/pennon-dev/pennon/internal/natsrun"
)

// TestControlPlaneNATSLossIsRecorded cuts the control plane's own NATS
// connection: a nats_disconnected record opens (kept in memory while the
// store is unreachable), closes recovered when the connection is back, and
// is then written to the bucket, where a restarted ledger finds it.
func TestControlPlaneNATSLossIsRecorded(t *testing.T) {
	ns := natsrun.StartTest(t)
	fn, err := faultnet.New(strings.TrimPrefix(ns.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Close()
	cred, err := ns.ControlCredential()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+fn.Addr(), nats.UserJWTAndSeed(cred.JWT, string(cred.Seed)), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ev := &events{}
	led, err := ledger.Open(context.Background(), ledger.Options{JetStream: js, Notify: ev, Source: "control-plane/test", CheckEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); led.Watch(ctx, nc) }()
	defer func() { cancel(); <-done }()

	own := func(status string) func() error {
		return func() error {
			for _, r := range led.List(ledger.Filter{}) {
				if r.Kind == incident.KindNATSDisconnected && r.Status == status && r.Env == "" && r.Source == "control-plane/test" {
					return nil
				}
			}
			return fmt.Errorf("no %s nats_disconnected record: %+v", status, led.List(ledger.Filter{}))
		}
	}
	fn.Cut()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, own(incident.StatusOpen))
	fn.Restore()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, own(incident.StatusRecovered))

	// Written once the store answered again: a second ledger (another
	// control-plane process) loads it from the bucket.
	nc2 := natsrun.ConnectTest(t, ns)
	js2, _ := jetstream.New(nc2)
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		led2, err := ledger.Open(context.Background(), ledger.Options{JetStream: js2, Source: "control-plane/other"})
		if err != nil {
			return err
		}
		defer led2.Close()
		for _, r := range led2.List(ledger.Filter{Status: incident.StatusRecovered}) {
			if r.Kind == incident.KindNATSDisconnected && r.Recovered {
				return nil
			}
		}
		return fmt.Errorf("not in the bucket yet")
	})
	// Opened and closed announced once each (a store_unavailable record may
	// come too: JetStream stops answering before the client notices the
	// connection is gone).
	var disc *incident.Record
	for _, r := range led.List(ledger.Filter{}) {
		if r.Kind == incident.KindNATSDisconnected {
			disc = &r
		}
	}
	n := map[string]int{}
	for _, id := range ev.ids() {
		n[id]++
	}
	if n["incident/"+disc.ID+"/opened"] != 1 || n["incident/"+disc.ID+"/closed"] != 1 {
		t.Fatalf("events %v", ev.ids())
	}
}
