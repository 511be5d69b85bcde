package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/bench"
)

func TestLoadBody(t *testing.T) {
	dir := t.TempDir()
	answer := []byte(`{"key":"targeting5","reason":"TARGETING_MATCH","variant":"on","value":true,"metadata":{}}`)
	full := filepath.Join(dir, "answer.json")
	if err := os.WriteFile(full, answer, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		want    []byte
		wantErr string
	}{
		{"no file: the fixed 40-byte body", "", bench.BareBody, ""},
		{"a file: exactly its bytes", full, answer, ""},
		{"an empty file is refused", empty, nil, "-body-file " + empty + " is empty"},
		{"a missing file names the flag", filepath.Join(dir, "missing.json"), nil, "-body-file: open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadBody(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("loadBody(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
		})
	}
}
