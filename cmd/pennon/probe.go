package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

func init() {
	register(command{name: "probe", summary: "GET a health URL and exit 0 on 2xx (container HEALTHCHECK without curl)", run: runProbe})
}

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("probe", "pennon probe [--url http://127.0.0.1:8016/readyz]", "Checks a health endpoint; for distroless images, which have no curl.", stderr)
	url := fs.String("url", "http://127.0.0.1:8016/readyz", "URL to GET")
	timeout := fs.Duration("timeout", 2*time.Second, "request timeout")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, "GET", *url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "%s: %d %s\n", *url, resp.StatusCode, body)
		return exitError{code: 1}
	}
	return nil
}
