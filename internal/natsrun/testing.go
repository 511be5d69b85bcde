package natsrun

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// StartTest starts a real embedded JetStream server, with authorization as
// in production, on a random loopback port with its store in t.TempDir, and
// shuts it down when the test ends. Connect with s.Connect() (control-plane
// identity) or ConnectTest.
func StartTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// ConnectTest connects to s as the control plane and closes the connection
// when the test ends.
func ConnectTest(t testing.TB, s *Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(opts...)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
