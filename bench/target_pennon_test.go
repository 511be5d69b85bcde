package bench

import (
	"context"
	"testing"
)

// TestRunAgainstPennon runs every scenario against pennon's real sidecar
// server, with and without its response cache (gRPC scenarios against its
// flagd evaluation service): every request must succeed, which also checks
// that bench-flags.json answers every scenario.
func TestRunAgainstPennon(t *testing.T) {
	grpcTarget, err := StartPennonGRPC()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := grpcTarget.Close(); err != nil {
			t.Error(err)
		}
	}()
	for _, cache := range []int64{0, -1} {
		tg, err := StartPennon(PennonOptions{CacheBytes: cache})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range ScenarioNames() {
			t.Run(tg.Label+"/"+name, func(t *testing.T) {
				sc, _ := NewScenario(name, FlagKeys{})
				url, label := tg.URL, tg.Label
				if sc.GRPC() {
					url, label = grpcTarget.URL, grpcTarget.Label
				}
				res, err := Run(context.Background(), Options{URL: url, Label: label, Scenario: sc, Connections: 2, Requests: 200})
				if err != nil {
					t.Fatal(err)
				}
				if res.Requests != 200 || res.Errors != 0 {
					t.Fatalf("requests %d errors %d (first %q, codes %v)", res.Requests, res.Errors, res.FirstError, res.StatusCodes)
				}
			})
		}
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartPennonBadFlags(t *testing.T) {
	if _, err := StartPennon(PennonOptions{Flags: []byte(`{"flags": {"x": {"state": "ON"}}}`)}); err == nil {
		t.Fatal("invalid flags: want an error")
	}
}
