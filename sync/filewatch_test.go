package flagsync

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pennon-dev/pennon/evaluator"
)

const fileGood = `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}`

// writeFlags replaces path atomically, as editors and ConfigMap updates do.
func writeFlags(t *testing.T, path, s string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// counter reads one counter from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestFileSourceStartErrors: a sidecar must not start serving nothing, and
// the error says which file and what is wrong with it.
func TestFileSourceStartErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, content, want string
		noFile              bool
	}{
		{name: "missing", noFile: true, want: "no such file"},
		{name: "not json", content: `{"flags":`, want: "is invalid, keeping the previous flags"},
		{name: "bad default", content: strings.Replace(fileGood, `"defaultVariant":"on"`, `"defaultVariant":"blue"`, 1), want: "flags.f.defaultVariant"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".json")
			if !c.noFile {
				writeFlags(t, path, c.content)
			}
			_, err := NewFileSource(FileOptions{Path: path})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want it to name %s and contain %q", err, path, c.want)
			}
		})
	}
	if _, err := NewFileSource(FileOptions{}); err == nil || !strings.Contains(err.Error(), "Path is required") {
		t.Fatalf("empty path: %v", err)
	}
}

// TestFileSourceReloadSequence walks good → same bytes → bad (twice) →
// good and checks snapshot versions, status, readiness and metrics: a bad
// file is rejected whole, counted and reported once, old flags keep serving.
func TestFileSourceReloadSequence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	writeFlags(t, path, fileGood)
	reg := prometheus.NewRegistry()
	fs, err := NewFileSource(FileOptions{Path: path, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	bad := `{"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"nope"}}}`
	off := strings.Replace(fileGood, `"defaultVariant":"on"`, `"defaultVariant":"off"`, 1)
	steps := []struct {
		name      string
		content   string
		wantErr   bool
		version   uint64
		reloads   float64
		failures  float64
		lastError string
	}{
		{name: "unchanged bytes are no reload", content: fileGood, version: 1, reloads: 1},
		{name: "invalid rejected", content: bad, wantErr: true, version: 1, reloads: 1, failures: 1, lastError: "flags.f.defaultVariant"},
		{name: "same invalid bytes not re-counted", content: bad, version: 1, reloads: 1, failures: 1, lastError: "flags.f.defaultVariant"},
		{name: "valid change applied", content: off, version: 2, reloads: 2, failures: 1},
	}
	for _, s := range steps {
		writeFlags(t, path, s.content)
		err := fs.reload()
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: reload error %v, want error %v", s.name, err, s.wantErr)
		}
		snap := fs.Current()
		if snap == nil || snap.Version() != s.version {
			t.Fatalf("%s: serving %v, want version %d", s.name, snap, s.version)
		}
		st := fs.Status().(FileStatus)
		if st.Version != s.version || !strings.Contains(st.LastError, s.lastError) || (s.lastError == "") != (st.LastError == "") {
			t.Fatalf("%s: status %+v, want version %d and lastError containing %q", s.name, st, s.version, s.lastError)
		}
		if (st.ErrorAt != nil) != (s.lastError != "") {
			t.Fatalf("%s: lastErrorAt %v with lastError %q", s.name, st.ErrorAt, st.LastError)
		}
		if ok, detail := fs.Ready(); !ok {
			t.Fatalf("%s: a loaded file source must stay ready: %s", s.name, detail)
		}
		if got := counter(t, reg, "pennon_reloads_total"); got != s.reloads {
			t.Fatalf("%s: reloads %v, want %v", s.name, got, s.reloads)
		}
		if got := counter(t, reg, "pennon_reload_failures_total"); got != s.failures {
			t.Fatalf("%s: failures %v, want %v", s.name, got, s.failures)
		}
	}
}

// TestUnchangedFileIsNotReadWhole: the interval check hashes an unchanged
// file through a small buffer instead of reading it into memory (a 16 MB
// file every second kept an idle 100,000-flag sidecar collecting), and a
// changed file is still loaded.
func TestUnchangedFileIsNotReadWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range 20000 { // ~2 MB
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"flag-%05d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`, i)
	}
	sb.WriteString(`}}`)
	writeFlags(t, path, sb.String())
	fs, err := NewFileSource(FileOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.reload(); err != nil { // warm the buffer pool
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 5 {
		if err := fs.reload(); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
		t.Fatalf("5 checks of an unchanged %d-byte file allocated %d bytes", sb.Len(), got)
	}
	if v := fs.Status().(FileStatus).Version; v != 1 {
		t.Fatalf("version %d after unchanged checks, want 1", v)
	}
	writeFlags(t, path, strings.Replace(sb.String(), `"flag-00000":{"state":"ENABLED"`, `"flag-00000":{"state":"DISABLED"`, 1))
	if err := fs.reload(); err != nil {
		t.Fatal(err)
	}
	if v := fs.Status().(FileStatus).Version; v != 2 {
		t.Fatalf("version %d after a change, want 2", v)
	}
	if r := fs.Current().Evaluate("flag-00000", nil); r.Reason != evaluator.ReasonDisabled {
		t.Fatalf("flag-00000 after the change: %+v, want DISABLED", r)
	}
}
