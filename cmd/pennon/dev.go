package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/examples"
)

func init() {
	register(command{name: "dev", summary: "run everything in one process (NATS, control plane, sidecar) with the example flags", run: runDev})
}

type devOptions struct {
	data, sidecarAddr, apiAddr, natsAddr string
	grpcAddr, syncAddr                   string // flagd's ports; empty (tests) disables
	logFormat, logLevel                  string
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", "pennon dev [--data ./pennon-data]",
		"Starts embedded NATS JetStream, the control plane and a sidecar in one process, loads the\n"+
			"checkout example into environment `dev` on first start, and prints what to try. Data\n"+
			"persists in --data. Ctrl-C stops everything cleanly.", stderr)
	var o devOptions
	fs.StringVar(&o.data, "data", "./pennon-data", "data directory")
	fs.StringVar(&o.sidecarAddr, "addr", "127.0.0.1:8016", "sidecar (OFREP) listen address")
	fs.StringVar(&o.apiAddr, "api-addr", "127.0.0.1:8080", "control plane listen address")
	fs.StringVar(&o.natsAddr, "nats-addr", "127.0.0.1:4222", "embedded NATS listen address")
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:8013", "flagd evaluation service (gRPC) of the sidecar; empty disables")
	fs.StringVar(&o.syncAddr, "sync-addr", "127.0.0.1:8015", "flagd sync service of the sidecar (in-process providers); empty disables")
	fs.StringVar(&o.logFormat, "log-format", "console", "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level")
	fs.String("config", "", "YAML file with any of these settings")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	log, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck
	return runDevSystem(ctx, o, log, stdout, nil)
}

// runDevSystem runs the whole system until ctx ends. ready, if set,
// receives the sidecar and API addresses and the admin token.
func runDevSystem(ctx context.Context, o devOptions, log *zap.Logger, stdout io.Writer, ready chan<- [3]string) error {
	rs, err := startServer(ctx, serverOptions{addr: o.apiAddr, data: o.data, natsAddr: o.natsAddr, replicas: 1, snapshotEvery: 20,
		adminTokenFile: filepath.Join(o.data, "admin-token"), envs: []string{"dev"}, heartbeat: time.Second}, log)
	if err != nil {
		return err
	}
	defer rs.Close()
	admin, err := readToken(filepath.Join(o.data, "admin-token"))
	if err != nil {
		return err
	}
	head, err := rs.Store.Head(ctx, "dev")
	if err != nil {
		return err
	}
	if head.Version == 0 {
		if err := loadExample(ctx, "http://"+rs.API.Addr(), admin); err != nil {
			return fmt.Errorf("load example flags: %w", err)
		}
		if head, err = rs.Store.Head(ctx, "dev"); err != nil {
			return err
		}
		log.Info("example flags loaded", zap.String("env", "dev"), zap.Uint64("version", head.Version), zap.Int("flags", head.Doc.Len()))
	}
	sidecarTokFile := filepath.Join(o.data, "sidecar-token")
	sidecarTok, err := readToken(sidecarTokFile)
	if err != nil {
		tok, _, cerr := rs.Tokens.Create(ctx, "dev-sidecar", map[string]string{"dev": "viewer"}, 0, "pennon dev")
		if cerr != nil {
			return cerr
		}
		if err := os.WriteFile(sidecarTokFile, []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
		sidecarTok = tok
	}
	apiURL := "http://" + rs.API.Addr()
	addrCh := make(chan string, 1)
	sctx, stopSidecar := context.WithCancel(ctx)
	defer stopSidecar()
	done := make(chan error, 1)
	go func() {
		// The dev sidecar pins the control plane's key: it is in this process.
		done <- serveSidecar(sctx, sidecarOptions{addr: o.sidecarAddr, env: "dev", server: apiURL, natsURL: rs.NATSURL, token: sidecarTok,
			trustKeys: listFlag{rs.SigningKey.Public().String()}, grpcAddr: o.grpcAddr, syncAddr: o.syncAddr,
			stateDir: filepath.Join(o.data, "sidecar"), poll: 2 * time.Second, reload: time.Second, drain: 5 * time.Second, maxBody: 64 << 10, cacheMB: 16}, log, addrCh)
	}()
	var sidecarAddr string
	select {
	case sidecarAddr = <-addrCh:
	case err := <-done:
		return fmt.Errorf("sidecar: %w", err)
	}
	printDevBanner(stdout, sidecarAddr, apiURL, rs.NATSURL, admin, head.FlagVersion("performance-mode"))
	if o.grpcAddr != "" || o.syncAddr != "" {
		fmt.Fprintf(stdout, "  flagd providers: RPC mode %s, in-process (sync) %s\n\n", orOff(o.grpcAddr), orOff(o.syncAddr))
	}
	if ready != nil {
		ready <- [3]string{sidecarAddr, apiURL, admin}
	}
	select {
	case <-ctx.Done():
		log.Info("stopping pennon dev")
		return <-done
	case err := <-done:
		return err
	}
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// loadExample applies the checkout example to the dev environment through
// the admin API, as a user would with `pennon apply`: one changeset, signed,
// audited and anchored like any other.
func loadExample(ctx context.Context, api, token string) error {
	body, _ := json.Marshal(map[string]any{"document": json.RawMessage(examples.Checkout), "reason": "load the checkout example (pennon dev)"})
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/api/v1/envs/dev/apply", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Errorf("apply answered %d: %s", resp.StatusCode, b)
	}
	return nil
}

func printDevBanner(w io.Writer, sidecar, api, natsURL, admin string, perfVersion uint64) {
	fmt.Fprintf(w, `
pennon dev is running (Ctrl-C to stop)

  sidecar (OFREP)  http://%[1]s
  control plane    %[2]s
  web console      %[2]s/  (sign in with the admin token below)
  NATS JetStream   %[3]s
  admin token      %[4]s

Try:

  # evaluate a flag the way an OpenFeature OFREP provider does
  curl -s -X POST http://%[1]s/ofrep/v1/evaluate/flags/performance-mode \
    -H 'Content-Type: application/json' -d '{"context":{"targetingKey":"u1","cpuHeadroom":50}}'

  # change a flag (baseVersion is the version you are changing; a stale one gets 409)
  curl -s -X PUT %[2]s/api/v1/envs/dev/flags/performance-mode \
    -H 'Authorization: Bearer %[4]s' -H 'Content-Type: application/json' \
    -d '{"baseVersion":%[5]d,"reason":"try pennon","definition":{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"safe"}}'

  # see the history of the dev environment
  curl -s '%[2]s/api/v1/envs/dev/history?limit=5' -H 'Authorization: Bearer %[4]s'

`, sidecar, api, natsURL, admin, perfVersion)
}

func orOff(addr string) string {
	if addr == "" {
		return "off"
	}
	return addr
}
