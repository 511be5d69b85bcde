package natsrun

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// StartTest starts a real embedded JetStream server on a random loopback
// port with its store in t.TempDir, and shuts it down when the test ends.
// Connect with s.ClientURL().
func StartTest(t testing.TB) *server.Server {
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
