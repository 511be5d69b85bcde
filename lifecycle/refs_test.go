package lifecycle

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The testdata tree holds OpenFeature calls in Java, TypeScript/React, Go,
// Python, C#, Ruby and an OFREP path in docs, plus files that must not be
// read (node_modules, vendor, a binary file).
func TestScanDirGolden(t *testing.T) {
	s, err := ScanDir(filepath.Join("testdata", "src"))
	if err != nil {
		t.Fatal(err)
	}
	envKeys := []string{"checkout-v2", "dark-mode", "legacy-export", "max-items", "new-banner", "old-promo", "theme"}
	got, _ := json.MarshalIndent(s.Compare("prod", envKeys), "", "  ")
	golden(t, filepath.Join("testdata", "refs.golden"), append(got, '\n'))
}

func TestScanPatterns(t *testing.T) {
	cases := []struct {
		name, file, src string
		want            []string // keys found, in order
	}{
		{"java", "A.java", `boolean b = client.getBooleanValue("a-b", false);`, []string{"a-b"}},
		{"js single quotes", "a.js", `await client.getStringValue('theme.color', 'x')`, []string{"theme.color"}},
		{"ts template", "a.ts", "client.getNumberDetails(`n_1`, 1)", []string{"n_1"}},
		{"php", "a.php", `$client->getBooleanValue('php-flag', false);`, []string{"php-flag"}},
		{"dotnet async", "a.cs", `await client.GetIntegerValueAsync("cs-int", 0)`, []string{"cs-int"}},
		{"python", "a.py", `client.get_float_value("ratio", 0.5)`, []string{"ratio"}},
		{"python keyword", "a.py", `client.get_object_value(flag_key="obj", default_value={})`, []string{"obj"}},
		{"ruby", "a.rb", `client.fetch_string_value(flag_key: "rb", default_value: "")`, []string{"rb"}},
		{"rust turbofish", "a.rs", `client.get_bool_value("rs", None, None)`, []string{"rs"}},
		{"go", "a.go", `v, _ := client.StringValue(ctx, "go-flag", "x", ec)`, []string{"go-flag"}},
		{"go details", "a.go", `d, _ := c.ObjectValueDetails(r.Context(), "obj", nil, ec)`, []string{"obj"}},
		{"go wrapper is not a flag", "a.go", `wrapperspb.StringValue("x")`, nil},
		{"react", "a.tsx", `const on = useFlag('r1', false); const x = useObjectFlagDetails("r2", {})`, []string{"r1", "r2"}},
		{"react generic", "a.tsx", `useStringFlagValue<Theme>("themed", "light")`, []string{"themed"}},
		{"ofrep", "a.sh", `curl -d '{}' http://sidecar/ofrep/v1/evaluate/flags/shell-flag`, []string{"shell-flag"}},
		{"ofrep at end of a sentence", "a.md", `see /ofrep/v1/evaluate/flags/doc-flag.`, []string{"doc-flag"}},
		{"dynamic key not found", "a.js", `client.getBooleanValue(name, false)`, nil},
		{"same key twice on a line", "a.js", `getBooleanValue("d", 1) || getBooleanValue("d", 2)`, []string{"d"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &Scan{Refs: map[string][]Location{}}
			s.scanFile(tc.file, []byte("\n"+tc.src+"\n"))
			var got []string
			for _, k := range sortedKeys(s.Refs) {
				got = append(got, k)
				if l := s.Refs[k]; len(l) != 1 || l[0] != (Location{File: tc.file, Line: 2}) {
					t.Errorf("%s at %+v, want %s:2", k, l, tc.file)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("found %v, want %v", got, tc.want)
			}
		})
	}
}

// .git, huge and binary files are skipped and counted (binary, huge).
func TestScanDirSkips(t *testing.T) {
	root := t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(".git/config", []byte(`getBooleanValue("git", false)`))
	write("huge.js", []byte(`getBooleanValue("huge", false)`+strings.Repeat(" ", MaxScanFileBytes)))
	write("bin.dat", []byte("getBooleanValue(\"bin\", false)\x00"))
	write("ok.js", []byte(`getBooleanValue("ok", false)`))
	s, err := ScanDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(s.Refs); !slices.Equal(got, []string{"ok"}) || s.Files != 1 || s.Skipped != 2 {
		t.Fatalf("refs %v files %d skipped %d, want [ok] 1 2", got, s.Files, s.Skipped)
	}
	if _, err := ScanDir(filepath.Join(root, "missing")); err == nil {
		t.Fatal("a missing directory is not an error")
	}
}

// Any file content scans without a panic, and every location found is a
// line of the file.
func FuzzScanFile(f *testing.F) {
	for _, s := range []string{`client.getBooleanValue("a", false)`, "useFlag('x')\n/ofrep/v1/evaluate/flags/y.", "\x00\xff", `BooleanValue(ctx, "k"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Scan{Refs: map[string][]Location{}}
		s.scanFile("f", data)
		lines := strings.Count(string(data), "\n") + 1
		for k, locs := range s.Refs {
			for _, l := range locs {
				if k == "" || l.Line < 1 || l.Line > lines {
					t.Fatalf("key %q at line %d of %d", k, l.Line, lines)
				}
			}
		}
	})
}
