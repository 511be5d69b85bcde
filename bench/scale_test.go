package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/config"
	"gopkg.in/yaml.v3"
)

func TestScale(t *testing.T) {
	res, err := Scale(ScaleOptions{Sizes: []int{10, 200}, Updates: 2, LoadFor: 500 * time.Millisecond, Connections: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("results %+v", res)
	}
	for _, r := range res {
		if r.DocBytes == 0 || r.ParseMs <= 0 || r.CompMs < 0 || r.UpdateMs <= 0 || r.StartupMs < r.ParseMs ||
			r.FullUpdateMs <= 0 || r.SingleRPS <= 0 || r.RSSMB <= 0 {
			t.Errorf("%d flags: %+v", r.Flags, r)
		}
	}
	// A bulk answer of 200 flags may not finish inside half a second under
	// -race on a loaded machine; 10 flags always does.
	if res[0].BulkRPS <= 0 {
		t.Errorf("10 flags: no bulk throughput: %+v", res[0])
	}
	if res[1].DocBytes <= res[0].DocBytes {
		t.Errorf("document does not grow with flags: %+v", res)
	}
	if _, err := Scale(ScaleOptions{Sizes: []int{0}}); err == nil {
		t.Error("0 flags: want an error")
	}
}

// TestGeneratedDocumentKinds: the generated document holds the promised mix
// and every flag compiles.
func TestGeneratedDocumentKinds(t *testing.T) {
	doc, err := config.Parse(GenerateDocument(20))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(doc.FlagKeys()); n != 20 {
		t.Fatalf("%d flags, want 20", n)
	}
	var targeting, fractional int
	for _, k := range doc.FlagKeys() {
		if f := doc.Flag(k); len(f.Targeting) > 0 {
			if string(f.Targeting[:14]) == `{"fractional":` {
				fractional++
			} else {
				targeting++
			}
		}
	}
	if targeting != 6 || fractional != 2 {
		t.Errorf("targeting %d fractional %d, want 6 and 2 of 20", targeting, fractional)
	}
	if _, err := doc.Compile(1); err != nil {
		t.Fatal(err)
	}
}

// TestBenchFlagFiles: the flag set shipped for side-by-side runs loads in
// pennon and holds the keys the scenarios ask for; the GO Feature Flag
// translation has the same keys.
func TestBenchFlagFiles(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("flags", "bench-flags.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := config.Parse(data)
	if err != nil {
		t.Fatalf("bench-flags.json: %v", err)
	}
	goffData, err := os.ReadFile(filepath.Join("flags", "goff-flags.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var goff map[string]any
	if err := yaml.Unmarshal(goffData, &goff); err != nil {
		t.Fatalf("goff-flags.yaml: %v", err)
	}
	for _, k := range []string{DefaultFlagKeys.Static, DefaultFlagKeys.Targeting, DefaultFlagKeys.Fractional} {
		if doc.Flag(k) == nil {
			t.Errorf("bench-flags.json: no flag %s", k)
		}
		if goff[k] == nil {
			t.Errorf("goff-flags.yaml: no flag %s", k)
		}
	}
}
