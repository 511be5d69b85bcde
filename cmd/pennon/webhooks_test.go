package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/notify"
)

var maskWebhookSecret = regexp.MustCompile(`whsec_[A-Za-z0-9_-]+`)

// TestWebhooksGolden runs `pennon webhooks` and `pennon events` against the
// dev system with a local receiver, and compares each step's output with
// testdata/golden/<step>.golden (-update rewrites them). The receiver checks
// the signature of what it gets with the secret `webhooks add` printed.
func TestWebhooksGolden(t *testing.T) {
	dev := startDev(t)
	var mu sync.Mutex
	var bodies [][]byte
	var sigs []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, sigs = append(bodies, b), append(sigs, r.Header.Get(notify.SignatureHeader))
		mu.Unlock()
	}))
	defer recv.Close()
	m := newMasker(map[string]string{dev.api: "<SERVER>", dev.admin: "<ADMIN-TOKEN>", recv.URL: "<RECEIVER>"})
	vars := map[string]string{}
	steps := []struct {
		name    string
		args    []string
		code    int
		capture func(out string)
		before  func(t *testing.T)
	}{
		{name: "webhooks_list_empty", args: []string{"webhooks", "list"}},
		{name: "webhooks_add", args: []string{"webhooks", "add", recv.URL + "/pennon", "--types", "change,emergency", "--description", "ops"},
			capture: func(out string) {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				vars["secret"] = lines[len(lines)-1]
				_, id, _ := strings.Cut(lines[0], "created webhook:")
				vars["id"] = strings.TrimSpace(id)
			}},
		{name: "webhooks_add_credentials", args: []string{"webhooks", "add", "https://user:pw@example.com/x"}, code: 1},
		{name: "webhooks_add_without_url", args: []string{"webhooks", "add"}, code: 2},
		{name: "webhooks_unknown_verb", args: []string{"webhooks", "delete", "x"}, code: 2},
		{name: "webhooks_flag_of_another_verb", args: []string{"webhooks", "list", "--format", "slack"}, code: 2},
		{name: "webhooks_list", args: []string{"webhooks", "list"}},
		{name: "webhooks_deliveries", args: []string{"webhooks", "deliveries", "{id}"}, before: func(t *testing.T) {
			code, out, errOut := runCLI("flags", "set", "webhook-demo", "--definition", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`,
				"--reason", "try webhooks", "--env", "dev", "--server", dev.api, "--token", dev.admin)
			if code != 0 {
				t.Fatalf("flags set: %d %s %s", code, out, errOut)
			}
			checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				code, out, _ := runCLI("webhooks", "deliveries", vars["id"], "--json", "--env", "dev", "--server", dev.api, "--token", dev.admin)
				var d struct{ Deliveries []notify.Delivery }
				if code != 0 || json.Unmarshal([]byte(out), &d) != nil || len(d.Deliveries) != 1 || d.Deliveries[0].State != notify.StateDelivered {
					return fmt.Errorf("deliveries: %d %s", code, out)
				}
				return nil
			})
		}},
		{name: "events", args: []string{"events", "--type", "change", "--limit", "1"}},
		{name: "events_bad_type", args: []string{"events", "--type", "deploy"}, code: 1},
		{name: "webhooks_remove", args: []string{"webhooks", "remove", "{id}"}},
		{name: "webhooks_deliveries_removed", args: []string{"webhooks", "deliveries", "{id}"}, code: 1},
	}
	for _, st := range steps {
		ok := t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before(t)
			}
			args := []string{}
			for _, a := range st.args {
				args = append(args, fill(t, a, vars))
			}
			shown := strings.Join(quoteArgs(args), " ")
			args = append(args, "--env", "dev", "--server", dev.api, "--token", dev.admin)
			code, out, errOut := runCLI(args...)
			if code != st.code {
				t.Fatalf("pennon %s: exit %d, want %d\nstdout: %s\nstderr: %s", shown, code, st.code, out, errOut)
			}
			if st.capture != nil {
				st.capture(out)
			}
			mask := func(s string) string { return maskWebhookSecret.ReplaceAllString(s, "<WEBHOOK-SECRET>") }
			got := fmt.Sprintf("$ pennon %s\nexit %d\n--- stdout\n%s--- stderr\n%s", mask(m.mask(shown)), code, mask(m.maskOut(out)), mask(m.mask(errOut)))
			golden(t, filepath.Join("golden", st.name), got)
		})
		if !ok && st.capture != nil {
			t.Fatalf("step %s failed; later steps need what it captures", st.name)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("receiver got %d deliveries, want 1", len(bodies))
	}
	if err := notify.Verify(vars["secret"], sigs[0], bodies[0], time.Now(), 5*time.Minute); err != nil {
		t.Errorf("the delivery does not verify with the secret webhooks add printed: %v", err)
	}
	var e notify.Event
	if err := json.Unmarshal(bodies[0], &e); err != nil || e.Type != notify.TypeChange || e.Flag != "webhook-demo" || e.Data["reason"] != "try webhooks" {
		t.Errorf("delivered event %s (%v)", bodies[0], err)
	}
}
