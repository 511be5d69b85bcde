package lifecycle

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Flag references in source code, found by the OpenFeature call patterns
// of the common SDKs (not by parsing any language, so a key built at run
// time is not found, and a call in a comment is). keyRE is a flag key as
// config accepts it.
const keyRE = `([A-Za-z0-9_][A-Za-z0-9_.\-]{0,199})`

var refPatterns = []struct {
	name string
	re   *regexp.Regexp
}{
	// Java, JavaScript/TypeScript, PHP, .NET, Python, Ruby, Rust:
	// getBooleanValue("k", …), getStringDetails('k', …),
	// GetIntegerValueAsync("k", …), get_boolean_value("k", …),
	// fetch_boolean_value(flag_key: "k", …), get_bool_value("k", …).
	{"sdk", regexp.MustCompile(`(?i)\b(?:get|fetch)_?(?:boolean|bool|string|integer|int|float|double|number|object)_?(?:value|details|value_details)(?:async)?\s*(?:::<[^>]*>)?\(\s*(?:flag_?key\s*[:=]\s*)?["'` + "`" + `]` + keyRE + `["'` + "`" + `]`)},
	// Go: client.BooleanValue(ctx, "k", …), StringValueDetails(ctx, "k", …):
	// the first argument is the context, which keeps wrapper types such as
	// wrapperspb.StringValue("x") out.
	{"go", regexp.MustCompile(`\b(?:Boolean|String|Int|Float|Object)Value(?:Details)?\(\s*[A-Za-z_][\w.]*(?:\(\))?\s*,\s*["` + "`" + `]` + keyRE + `["` + "`" + `]`)},
	// React: useFlag("k", …), useBooleanFlagValue("k", …),
	// useStringFlagDetails("k", …), useSuspenseFlag("k", …).
	{"react", regexp.MustCompile(`\buse(?:Suspense)?(?:Boolean|String|Number|Object)?Flag(?:Value|Details)?\s*(?:<[^>(]*>)?\(\s*["'` + "`" + `]` + keyRE + `["'` + "`" + `]`)},
	// OFREP over plain HTTP: /ofrep/v1/evaluate/flags/k.
	{"ofrep", regexp.MustCompile(`/ofrep/v1/evaluate/flags/` + keyRE)},
}

// Scan limits: vendored and generated trees are not the application's own
// use, and huge or binary files are not source.
var skipDirs = []string{".git", ".hg", ".svn", "node_modules", "vendor"}

// MaxScanFileBytes is the largest file Scan reads.
const MaxScanFileBytes = 1 << 20

// Location is one reference to a flag key.
type Location struct {
	File string `json:"file"` // slash-separated, relative to the scanned root
	Line int    `json:"line"`
}

// Scan is what a walk of a source tree found.
type Scan struct {
	Files   int                   `json:"filesScanned"`
	Skipped int                   `json:"filesSkipped"` // binary or over MaxScanFileBytes
	Refs    map[string][]Location `json:"refs"`         // flag key → where, in file and line order
}

// ScanDir walks root and records every flag key found by the patterns.
func ScanDir(root string) (*Scan, error) {
	s := &Scan{Refs: map[string][]Location{}}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && slices.Contains(skipDirs, d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // symlinks, devices: not followed
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxScanFileBytes {
			s.Skipped++
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(data[:min(len(data), 8000)], 0) >= 0 {
			s.Skipped++
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			rel = path
		}
		s.Files++
		s.scanFile(filepath.ToSlash(rel), data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for k := range s.Refs {
		slices.SortFunc(s.Refs[k], func(a, b Location) int {
			if c := strings.Compare(a.File, b.File); c != 0 {
				return c
			}
			return a.Line - b.Line
		})
	}
	return s, nil
}

func (s *Scan) scanFile(rel string, data []byte) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), MaxScanFileBytes+1)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		seen := map[string]bool{}
		for _, p := range refPatterns {
			for _, m := range p.re.FindAllStringSubmatch(text, -1) {
				key := strings.TrimRight(m[1], ".-") // a path at the end of a sentence
				if key == "" || seen[key] {
					continue
				}
				seen[key] = true
				s.Refs[key] = append(s.Refs[key], Location{File: rel, Line: line})
			}
		}
	}
}

// RefsReport compares the keys found in code with an environment's flags.
type RefsReport struct {
	Env     string `json:"env"`
	Files   int    `json:"filesScanned"`
	Skipped int    `json:"filesSkipped"`
	// Found lists the environment's flags referenced in code.
	Found []FlagRefs `json:"found"`
	// InCodeNotInEnv are keys the code asks for that the environment does
	// not have: the code gets its default (and a FLAG_NOT_FOUND error).
	InCodeNotInEnv []FlagRefs `json:"inCodeNotInEnv"`
	// InEnvNotInCode are the environment's flags no scanned code names:
	// candidates for removal (or used by code elsewhere).
	InEnvNotInCode []string `json:"inEnvNotInCode"`
}

// FlagRefs is one key and where it is referenced.
type FlagRefs struct {
	Flag string     `json:"flag"`
	Refs []Location `json:"refs"`
}

// Compare sorts the scan's keys against the environment's flag keys.
func (s *Scan) Compare(env string, envKeys []string) *RefsReport {
	r := &RefsReport{Env: env, Files: s.Files, Skipped: s.Skipped, Found: []FlagRefs{}, InCodeNotInEnv: []FlagRefs{}, InEnvNotInCode: []string{}}
	inEnv := map[string]bool{}
	for _, k := range envKeys {
		inEnv[k] = true
		if _, ok := s.Refs[k]; !ok {
			r.InEnvNotInCode = append(r.InEnvNotInCode, k)
		}
	}
	for _, k := range sortedKeys(s.Refs) {
		fr := FlagRefs{Flag: k, Refs: s.Refs[k]}
		if inEnv[k] {
			r.Found = append(r.Found, fr)
		} else {
			r.InCodeNotInEnv = append(r.InCodeNotInEnv, fr)
		}
	}
	slices.Sort(r.InEnvNotInCode)
	return r
}
