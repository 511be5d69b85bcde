package natsrun

import (
	"testing"

	"github.com/nats-io/nats.go"
)

func TestStartTestServesJetStream(t *testing.T) {
	s := StartTest(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("jetstream not enabled: %v", err)
	}
	if _, err := js.Publish("t.x", []byte("1")); err != nil {
		t.Fatal(err)
	}
}

func TestStartRequiresDataDir(t *testing.T) {
	if _, err := Start(Options{}); err == nil {
		t.Fatal("want error without DataDir")
	}
}
