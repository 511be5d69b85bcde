package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/internal/checkfor"
)

func post(t *testing.T, url, token, method, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDevEndToEnd runs `pennon dev` in process on random ports: the example
// flags are served, a change through the API reaches the sidecar over NATS,
// and a restart on the same data keeps state.
func TestDevEndToEnd(t *testing.T) {
	data := t.TempDir()
	run := func() (context.CancelFunc, chan error, [3]string) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan [3]string, 1)
		done := make(chan error, 1)
		var out strings.Builder
		go func() {
			done <- runDevSystem(ctx, devOptions{data: data, sidecarAddr: "127.0.0.1:0", apiAddr: "127.0.0.1:0", natsAddr: "127.0.0.1:0"}, zap.NewNop(), &out, ready)
		}()
		select {
		case addrs := <-ready:
			return cancel, done, addrs
		case err := <-done:
			t.Fatalf("dev stopped: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("dev did not start")
		}
		return nil, nil, [3]string{}
	}
	cancel, done, a := run()
	sidecar, api, admin := "http://"+a[0], a[1], a[2]
	eval := func() string {
		_, b := post(t, sidecar+"/ofrep/v1/evaluate/flags/performance-mode", "", "POST", `{"context":{"cpuHeadroom":5}}`)
		return b
	}
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if b := eval(); !strings.Contains(b, `"value":"balanced"`) {
			return fmt.Errorf("example not served yet: %s", b)
		}
		return nil
	})
	code, body := post(t, api+"/api/v1/envs/dev/flags/performance-mode", admin, "PUT",
		`{"baseVersion":1,"reason":"test","definition":{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"safe"}}`)
	if code != 201 {
		t.Fatalf("change: %d %s", code, body)
	}
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if b := eval(); !strings.Contains(b, `"value":"safe"`) {
			return fmt.Errorf("change not propagated: %s", b)
		}
		return nil
	})
	checkfor.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, b := post(t, api+"/api/v1/envs/dev/sidecars", admin, "GET", "")
		if !strings.Contains(b, `"version": 2`) || !strings.Contains(b, `"behind": []`) {
			return fmt.Errorf("sidecar not reported: %s", b)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
	// Restart on the same data: state and the admin token persist.
	cancel, done, a = run()
	if a[2] != admin {
		t.Fatal("admin token changed across restarts")
	}
	sidecar = "http://" + a[0]
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if b := eval(); !strings.Contains(b, `"value":"safe"`) {
			return fmt.Errorf("state lost across restart: %s", b)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}
