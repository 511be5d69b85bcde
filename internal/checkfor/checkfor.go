// Package checkfor waits for an observable condition in tests instead of
// sleeping, in the manner of nats-server's checkFor.
package checkfor

import (
	"testing"
	"time"
)

// CheckFor calls f every interval until it returns nil or total elapses, then
// fails the test with f's last error.
func CheckFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(interval)
	}
}
