package bench

import (
	"context"
	"net"
	"testing"
)

// FuzzCheckTarget: whatever the URL, checkTarget never panics and never
// accepts a literal non-loopback address without allowRemote.
func FuzzCheckTarget(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8016", "http://[::1]:1", "http://10.0.0.1", "https://x", "http://", "::", "http://127.0.0.1:8016/ofrep?x=1", "http://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		// A resolver that never reaches the network: names fail to resolve.
		r := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) { return nil, net.ErrClosed }}
		hp, err := checkTarget(context.Background(), raw, false, r)
		if err != nil {
			return
		}
		host, _, serr := net.SplitHostPort(hp)
		if serr != nil {
			t.Fatalf("accepted %q as %q, not host:port", raw, hp)
		}
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			t.Fatalf("accepted non-loopback %q", raw)
		}
	})
}
