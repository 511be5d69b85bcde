package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pennon.yaml")
	if err := os.WriteFile(file, []byte("addr: 127.0.0.1:9000\nlog-level: debug\ntimeout: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "addr")
	if err := os.WriteFile(addrFile, []byte("127.0.0.1:5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string // addr
		level   string
		timeout time.Duration
		wantErr string
	}{
		{name: "defaults", args: nil, want: "127.0.0.1:8016", level: "info", timeout: time.Second},
		{name: "file", args: []string{"--config", file}, want: "127.0.0.1:9000", level: "debug", timeout: 3 * time.Second},
		{name: "env beats file", args: []string{"--config", file}, env: map[string]string{"PENNON_ADDR": "127.0.0.1:7000"}, want: "127.0.0.1:7000", level: "debug", timeout: 3 * time.Second},
		{name: "flag beats env", args: []string{"--config", file, "--addr", "127.0.0.1:6000"}, env: map[string]string{"PENNON_ADDR": "127.0.0.1:7000"}, want: "127.0.0.1:6000", level: "debug", timeout: 3 * time.Second},
		{name: "config from env", env: map[string]string{"PENNON_CONFIG": file}, want: "127.0.0.1:9000", level: "debug", timeout: 3 * time.Second},
		{name: "bad env value", env: map[string]string{"PENNON_TIMEOUT": "soon"}, wantErr: `PENNON_TIMEOUT: invalid value "soon"`},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{name: "value from a _FILE", env: map[string]string{"PENNON_ADDR_FILE": addrFile}, want: "127.0.0.1:5000", level: "info", timeout: time.Second},
		{name: "env beats _FILE", env: map[string]string{"PENNON_ADDR_FILE": addrFile, "PENNON_ADDR": "127.0.0.1:7000"}, want: "127.0.0.1:7000", level: "info", timeout: time.Second},
		{name: "missing _FILE", env: map[string]string{"PENNON_ADDR_FILE": filepath.Join(dir, "nope")}, wantErr: "PENNON_ADDR_FILE: open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := newFlagSet("x", "pennon x", "test", io.Discard)
			addr := fs.String("addr", "127.0.0.1:8016", "listen address")
			level := fs.String("log-level", "info", "log level")
			timeout := fs.Duration("timeout", time.Second, "timeout")
			fs.String("config", "", "YAML settings file")
			err := parseSettings(fs, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tc.want || *level != tc.level || *timeout != tc.timeout {
				t.Fatalf("got addr=%s level=%s timeout=%v", *addr, *level, *timeout)
			}
		})
	}
}

func TestParseSettingsUnknownFileKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(file, []byte("adr: x\n"), 0o600)
	fs := newFlagSet("x", "pennon x", "test", io.Discard)
	fs.String("addr", "", "")
	fs.String("config", "", "")
	err := parseSettings(fs, []string{"--config", file})
	if err == nil || !strings.Contains(err.Error(), "unknown setting(s) adr (allowed: addr)") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunUnknownCommand(t *testing.T) {
	var out strings.Builder
	if code := run(t.Context(), []string{"nope"}, io.Discard, &out); code != 2 {
		t.Fatalf("code = %d", code)
	}
	if !strings.Contains(out.String(), `unknown command "nope"`) {
		t.Fatalf("stderr = %s", out.String())
	}
}
