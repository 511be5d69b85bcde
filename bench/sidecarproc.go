package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcessResult is what a real `pennon sidecar` process holding a flag set
// costs: the in-process figures of Scale leave out everything the process
// adds (its other listeners, metrics, the runtime's GC settings, the
// binary's own pages) and include the bench code; this is what a pod pays.
type ProcessResult struct {
	// ReadyMs is from starting the process until /readyz answers 200:
	// reading and parsing the file, hashing, compiling, listening.
	ReadyMs float64 `json:"readyMillis"`
	// RSSMB is the resident set (VmRSS) after the load run (or 2 s after
	// becoming ready when there was none); PeakMB is the high-water mark
	// (VmHWM), reached while parsing or under load.
	RSSMB  float64 `json:"rssMB"`
	PeakMB float64 `json:"peakRSSMB"`
	// SingleRPS and BulkRPS are as in ScaleResult, against this process.
	SingleRPS float64 `json:"singleRequestsPerSecond,omitempty"`
	BulkRPS   float64 `json:"bulkRequestsPerSecond,omitempty"`
}

// ProcessOptions run one sidecar process.
type ProcessOptions struct {
	// Binary is the pennon executable; Env is added to its environment
	// (tests run their own binary as pennon through it).
	Binary string
	Env    []string
	// ReadyWithin bounds start-up (default 5 minutes).
	ReadyWithin time.Duration
	LoadFor     time.Duration // 0: no load run
	Connections int
}

// settleAfterReady is how long MeasureProcess waits after readiness before
// reading memory when there is no load run.
const settleAfterReady = 2 * time.Second

// MeasureProcess starts `pennon sidecar --file` on doc (loopback, random
// ports), waits until it is ready, optionally loads it like scaleLoad, reads
// its memory from /proc and stops it.
func MeasureProcess(ctx context.Context, doc []byte, o ProcessOptions) (ProcessResult, error) {
	var r ProcessResult
	if o.ReadyWithin <= 0 {
		o.ReadyWithin = 5 * time.Minute
	}
	dir, err := os.MkdirTemp("", "pennon-scale-")
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	file := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		return r, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return r, err
	}
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, o.Binary, "sidecar", "--file", file, "--addr", addr, "--grpc-addr", "", "--sync-addr", "",
		"--log-level", "warn")
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stopProcess(cmd, exited)

	url := "http://" + addr
	if err := waitReady(ctx, url+"/readyz", start.Add(o.ReadyWithin), exited); err != nil {
		return r, fmt.Errorf("sidecar on %d bytes of flags: %w (its output: %s)", len(doc), err, strings.TrimSpace(logs.String()))
	}
	r.ReadyMs = millis(time.Since(start))
	if o.LoadFor > 0 {
		single, bulk, err := loadURL(url, o.LoadFor, o.Connections)
		if err != nil {
			return r, err
		}
		r.SingleRPS, r.BulkRPS = single, bulk
	} else {
		// The sidecar gives start-up's memory back just after it starts
		// listening (cmd/pennon/sidecar_memory.go): read the settled
		// figure, not the one of the moment it became ready.
		select {
		case <-time.After(settleAfterReady):
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		return r, fmt.Errorf("memory of the sidecar process: %w", err)
	}
	r.RSSMB, r.PeakMB = statusMB(status, "VmRSS:"), statusMB(status, "VmHWM:")
	return r, nil
}

// freeLoopbackAddr returns a loopback address nothing listens on now.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// waitReady polls url until it answers 200, the process exits or deadline.
func waitReady(ctx context.Context, url string, deadline time.Time, exited <-chan error) error {
	client := &http.Client{Timeout: time.Second}
	for {
		if resp, err := client.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before it was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("not ready in time")
		}
	}
}

// stopProcess asks the sidecar to drain and exit, and kills it if it
// does not within 10 s.
func stopProcess(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// statusMB reads one "Name:   123 kB" line of /proc/PID/status, in MB.
func statusMB(status []byte, name string) float64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}
