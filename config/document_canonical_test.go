package config

import (
	"strings"
	"testing"
	"time"
)

// The hash is what sidecars compare with the control plane's heartbeat, so
// documents that differ only in layout must hash alike, and any semantic
// change must change it.
func TestCanonicalIgnoresLayout(t *testing.T) {
	a := `{"flags":{"x":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","metadata":{"b":1,"a":"z"}}},"metadata":{"team":"web"}}`
	b := "{\n  \"metadata\": {\"team\": \"web\"},\n  \"flags\": {\"x\": {\"metadata\": {\"a\": \"z\", \"b\": 1},\n  \"defaultVariant\": \"on\", \"variants\": {\"off\": false, \"on\": true}, \"state\": \"ENABLED\"}}\n}"
	da, err := Parse([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	db, err := Parse([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if string(da.Canonical()) != string(db.Canonical()) || da.Hash() != db.Hash() {
		t.Fatalf("layout changed the canonical form:\n%s\n%s", da.Canonical(), db.Canonical())
	}
	want := `{"flags":{"x":{"state":"ENABLED","variants":{"off":false,"on":true},"defaultVariant":"on","metadata":{"a":"z","b":1}}},"metadata":{"team":"web"}}`
	if got := string(da.Canonical()); got != want {
		t.Fatalf("canonical\n got %s\nwant %s", got, want)
	}
	if h := da.Hash(); !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Fatalf("hash %q", h)
	}
	dc, _ := Parse([]byte(strings.Replace(a, `"defaultVariant":"on"`, `"defaultVariant":"off"`, 1)))
	if dc.Hash() == da.Hash() {
		t.Fatal("a semantic change kept the hash")
	}
}

func TestFlagJSONIsAPutDefinition(t *testing.T) {
	doc := mustParseFile(t, "../examples/checkout.json")
	def := doc.FlagJSON("performance-mode")
	next, err := Empty().Apply(&Changeset{Changes: []Change{{Flag: "performance-mode", Op: OpPut, Definition: def}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(next.FlagJSON("performance-mode")) != string(def) {
		t.Fatalf("round trip changed the flag:\n%s\n%s", def, next.FlagJSON("performance-mode"))
	}
	if doc.FlagJSON("nope") != nil {
		t.Fatal("FlagJSON of a missing flag must be nil")
	}
}

func TestExpiresAt(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2027-01-31", time.Date(2027, 1, 31, 23, 59, 59, 999999999, time.UTC), true},
		{"2027-01-31T12:00:00+02:00", time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC), true},
		{"", time.Time{}, false},
		{"tomorrow", time.Time{}, false},
	}
	for _, tc := range tests {
		got, ok := (&FlagDoc{Expires: tc.in}).ExpiresAt()
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("ExpiresAt(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
