package config

// This test runs flagd's public test bed (Gherkin scenarios + flag files,
// vendored in testdata/flagd-testbed, Apache-2.0) against pennon's parser
// and evaluator and asserts the same outcomes flagd gives.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/evaluator"
)

// testbed is the repository's own copy of flagd-testbed v3.9.0, so the
// compatibility claim is checked on every clone (CI has no ../shared).
const testbed = "testdata/flagd-testbed"

// sharedTestbed is the team's reference copy, when present: the test says
// whether the vendored copy has drifted from it.
const sharedTestbed = "../../shared/testdata/flagd-testbed"

// skippedTags are scenario tags pennon does not run, with the reason.
var skippedTags = map[string]string{
	"@fractional-v1": "flagd's legacy float bucketing; pennon implements v2 integer bucketing, which the evaluator test bed specifies",
	"@fractional-v3": "provider test bed's draft v3 bucketing; the evaluator test bed (v3.9.0) specifies v2, which pennon implements",
}

// skippedScenarios are provider-level scenarios whose expectations come from
// flagd's gRPC provider rather than from evaluation, by name prefix.
var skippedScenarios = map[string]string{
	"Resolves flag with no defaultValue correctly": "flagd's RPC provider reports FLAG_NOT_FOUND for a flag without a default variant; the evaluator test bed and OFREP specify the code default with reason DEFAULT",
}

// providerFeatures are the provider test bed's feature files: true runs
// them, otherwise the reason they do not apply to pennon. Every file in the
// directory must be listed, so a new test bed file cannot go unnoticed.
var providerFeatures = map[string]string{
	"evaluation.feature":        "",
	"targeting.feature":         "",
	"metadata.feature":          "",
	"disabled.feature":          "",
	"config.feature":            "flagd provider options (host, port, TLS, unix socket, resolver type); pennon's sidecar settings are tested in cmd/pennon",
	"connection.feature":        "flagd gRPC connection and reconnection; pennon's push/poll/disk degradation is tested in sidecar/flagsync",
	"contextEnrichment.feature": "context enrichment from flagd's sync stream and provider cache on connection errors; pennon sidecars do not inject context",
	"events.feature":            "OpenFeature provider events (ready/stale/error, change) of flagd's providers; pennon's change stream is SSE, tested in proxy",
	"rpc-caching.feature":       "flagd RPC provider's client-side cache; pennon caches in the sidecar (proxy tests)",
	"selector.feature":          "flagd sync selectors choosing a flag source; pennon selects by environment (config store tests)",
	"sync-payload.feature":      "metadata of flagd's sync payload; pennon's sync carries SnapshotRecord/Changeset (config/wire.go)",
}

// skippedSteps are provider steps about flagd's own transport and options,
// which pennon (an OFREP sidecar) does not have.
var skippedSteps = []string{"an option"}

// harmlessSteps are provider setup steps that do not change evaluation.
var harmlessSteps = []string{
	`Given an option "cache" of type "CacheType" with value "disabled"`,
	"Given an evaluator",
	"Given a stable flagd provider",
	"And a stable flagd provider",
	"And a metadata flagd provider",
}

// reSelector is flagd's "selector" option: which flag file a provider syncs.
// "flags/allFlags.json" is the merge of every provider flag file (the suite's
// snapshot); "rawflags/NAME" is flags/NAME on its own.
var reSelector = regexp.MustCompile(`^(?:Given|And) an option "selector" of type "String" with value "(.*)"$`)

type scenario struct {
	file, name string
	tags       []string
	steps      []string
	table      [][]string // data table of the last step that has one
}

// parseFeature reads scenarios, expanding Scenario Outlines with every
// Examples table (each Examples block keeps its own tags).
func parseFeature(t *testing.T, path string) []scenario {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out             []scenario
		featureTags     []string
		pendingTags     []string
		cur             *scenario
		outline         bool
		header          []string
		inExamples      bool
		exampleTags     []string
		background      []string
		inBackground    bool
		stepTable       [][]string
		flushStepTables = func() {
			if cur != nil && len(stepTable) > 0 && !inExamples {
				cur.table = stepTable
			}
			stepTable = nil
		}
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "@"):
			flushStepTables()
			if cur == nil && len(out) == 0 && !inBackground && featureTags == nil {
				featureTags = strings.Fields(line)
			} else {
				pendingTags = append(pendingTags, strings.Fields(line)...)
			}
		case strings.HasPrefix(line, "Feature:"):
			if pendingTags != nil {
				featureTags, pendingTags = pendingTags, nil
			}
		case strings.HasPrefix(line, "Background:"):
			inBackground = true
		case strings.HasPrefix(line, "Scenario"):
			flushStepTables()
			inBackground, inExamples = false, false
			outline = strings.HasPrefix(line, "Scenario Outline:")
			name := strings.TrimSpace(line[strings.Index(line, ":")+1:])
			tags := append(append([]string{}, featureTags...), pendingTags...)
			pendingTags = nil
			cur = &scenario{file: filepath.Base(path), name: name, tags: tags, steps: append([]string{}, background...)}
			if !outline {
				out = append(out, *cur)
			}
		case strings.HasPrefix(line, "Examples"):
			flushStepTables()
			inExamples, header = true, nil
			exampleTags, pendingTags = pendingTags, nil
		case strings.HasPrefix(line, "|"):
			cells := splitRow(line)
			if inExamples {
				if header == nil {
					header = cells
					continue
				}
				s := *cur
				s.tags = append(append([]string{}, cur.tags...), exampleTags...)
				s.steps = make([]string, len(cur.steps))
				for i, st := range cur.steps {
					for j, h := range header {
						st = strings.ReplaceAll(st, "<"+h+">", cells[j])
					}
					s.steps[i] = st
				}
				s.name = cur.name + " " + strings.Join(cells, "|")
				out = append(out, s)
			} else {
				stepTable = append(stepTable, cells)
			}
		default:
			flushStepTables()
			if inBackground {
				background = append(background, line)
			} else if cur != nil {
				cur.steps = append(cur.steps, line)
				if !outline {
					out[len(out)-1].steps = cur.steps
				}
			}
		}
		if !outline && cur != nil && len(out) > 0 && stepTable != nil {
			out[len(out)-1].table = stepTable
		}
	}
	return out
}

func splitRow(line string) []string {
	line = strings.Trim(line, "|")
	var cells []string
	for _, c := range strings.Split(line, "|") {
		c = strings.TrimSpace(c)
		c = strings.ReplaceAll(c, `\"`, `"`)
		cells = append(cells, c)
	}
	return cells
}

// loadLenient parses a flag file the way flagd serves it: flags that fail
// validation are removed (and answer PARSE_ERROR) instead of rejecting the
// whole file as pennon does in production.
func loadLenient(t *testing.T, files ...string) (*evaluator.Snapshot, map[string]bool) {
	t.Helper()
	merged := map[string]any{}
	flags := map[string]any{}
	evs := map[string]any{}
	meta := map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := decodeJSON(data, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for k, v := range doc["flags"].(map[string]any) {
			flags[k] = v
		}
		if e, ok := doc["$evaluators"].(map[string]any); ok {
			for k, v := range e {
				evs[k] = v
			}
		}
		if m, ok := doc["metadata"].(map[string]any); ok {
			for k, v := range m {
				meta[k] = v
			}
		}
	}
	merged["flags"], merged["$evaluators"], merged["metadata"] = flags, evs, meta
	broken := map[string]bool{}
	for range 20 {
		doc, err := Parse(canonicalJSON(merged))
		if err == nil {
			s, err := doc.Compile(1)
			if err != nil {
				t.Fatal(err)
			}
			return s, broken
		}
		ve := err.(*ValidationError)
		removed := false
		for _, p := range ve.Problems {
			for key := range flags {
				if strings.HasPrefix(p.Path, "flags."+key+".") || p.Path == "flags."+key || strings.Contains(p.Reason, "at flags."+key+".") {
					delete(flags, key)
					broken[key] = true
					removed = true
				}
			}
		}
		if !removed {
			t.Fatalf("cannot load test bed flags: %v", err)
		}
	}
	t.Fatal("too many broken flags")
	return nil, nil
}

var (
	reFlag      = regexp.MustCompile(`^(?:Given|And) an? (\w+)-flag with key "([^"]*)" and a (?:fallback|default) value "(.*)"$`)
	reCtxKey    = regexp.MustCompile(`^(?:Given|And) a context containing a key "([^"]*)", with type "(\w+)" and with value "(.*)"$`)
	reCtxNested = regexp.MustCompile(`^(?:Given|And) a context containing a nested property with outer key "([^"]*)" and inner key "([^"]*)", with value "(.*)"$`)
	reCtxTK     = regexp.MustCompile(`^(?:Given|And) a context containing a targeting key with value "(.*)"$`)
	reValue     = regexp.MustCompile(`^(?:Then|And) the resolved details value should be "(.*)"$`)
	reReason    = regexp.MustCompile(`^(?:Then|And) the reason should be "(.*)"$`)
	reVariant   = regexp.MustCompile(`^(?:Then|And) the variant should be "(.*)"$`)
	reErrCode   = regexp.MustCompile(`^(?:Then|And) the error-code should be "(.*)"$`)
)

func TestFlagdTestbed(t *testing.T) {
	for _, f := range []string{"/evaluator/flags/testkit-flags.json", "/evaluator/gherkin", "/flags", "/gherkin", "/LICENSE", "/NOTICE"} {
		if _, err := os.Stat(testbed + f); err != nil {
			t.Fatalf("flagd test bed incomplete: %v; it is vendored in config/testdata/flagd-testbed (see its README.md) and must not be removed", err)
		}
	}
	logDrift(t)
	evalSnap, evalBroken := loadLenient(t, testbed+"/evaluator/flags/testkit-flags.json")
	var providerFiles []string
	for _, f := range []string{"testing-flags.json", "custom-ops.json", "evaluator-refs.json", "zero-flags.json", "edge-case-flags.json", "metadata-flags.json", "disabled-flags.json"} {
		providerFiles = append(providerFiles, testbed+"/flags/"+f)
	}
	provSnap, provBroken := loadLenient(t, providerFiles...)

	suites := []struct {
		dir      string
		features []string
		snap     *evaluator.Snapshot
		broken   map[string]bool
	}{
		{testbed + "/evaluator/gherkin", nil, evalSnap, evalBroken},
		{testbed + "/gherkin", runProviderFeatures(t, testbed+"/gherkin"), provSnap, provBroken},
	}
	ran, skipped := 0, map[string]int{}
	for _, suite := range suites {
		files := suite.features
		if files == nil {
			matches, _ := filepath.Glob(suite.dir + "/*.feature")
			for _, m := range matches {
				files = append(files, filepath.Base(m))
			}
		}
		for _, file := range files {
			for _, sc := range parseFeature(t, suite.dir+"/"+file) {
				if why := skipReason(sc); why != "" {
					skipped[why]++
					t.Logf("skip %s/%s: %s", sc.file, sc.name, why)
					continue
				}
				ran++
				t.Run(sc.file+"/"+sc.name, func(t *testing.T) { runScenario(t, sc, suite.snap, suite.broken) })
			}
		}
	}
	if ran < 257 {
		t.Errorf("only %d scenarios ran; the test bed parser is probably broken", ran)
	}
	t.Logf("ran %d scenarios; skipped: %v", ran, skipped)
}

// runProviderFeatures returns the provider feature files to run, failing the
// test for a file that providerFeatures does not account for.
func runProviderFeatures(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(dir + "/*.feature")
	if err != nil {
		t.Fatal(err)
	}
	var run []string
	for _, m := range matches {
		name := filepath.Base(m)
		why, listed := providerFeatures[name]
		switch {
		case !listed:
			t.Errorf("%s: new provider feature file; add it to providerFeatures (run it, or say why it does not apply)", name)
		case why == "":
			run = append(run, name)
		default:
			t.Logf("skip %s: %s", name, why)
		}
	}
	sort.Strings(run)
	return run
}

func skipReason(sc scenario) string {
	for prefix, why := range skippedScenarios {
		if strings.HasPrefix(sc.name, prefix) {
			return why
		}
	}
	for _, tag := range sc.tags {
		if why, ok := skippedTags[tag]; ok {
			return why
		}
	}
	for _, st := range sc.steps {
		if contains(harmlessSteps, st) || reSelector.MatchString(st) {
			continue
		}
		for _, s := range skippedSteps {
			if strings.Contains(st, s) {
				return "uses flagd provider options/transport"
			}
		}
	}
	return ""
}

func runScenario(t *testing.T, sc scenario, snap *evaluator.Snapshot, broken map[string]bool) {
	var typ, key, fallback string
	ctx := map[string]any{}
	var res evaluator.Result
	var value any
	var code evaluator.ErrorCode
	for _, st := range sc.steps {
		switch {
		case contains(harmlessSteps, st):
		case st == "When the flag was evaluated with details":
			res, value, code = evalTyped(snap, broken, typ, key, fallback, ctx)
		case reSelector.MatchString(st):
			switch sel := reSelector.FindStringSubmatch(st)[1]; {
			case sel == "flags/allFlags.json":
			case strings.HasPrefix(sel, "rawflags/"):
				snap, broken = loadLenient(t, testbed+"/flags/"+strings.TrimPrefix(sel, "rawflags/"))
			default:
				t.Fatalf("unknown selector %q", sel)
			}
		case reFlag.MatchString(st):
			m := reFlag.FindStringSubmatch(st)
			typ, key, fallback = m[1], m[2], m[3]
		case reCtxKey.MatchString(st):
			m := reCtxKey.FindStringSubmatch(st)
			ctx[m[1]] = typedValue(t, m[2], m[3])
		case reCtxNested.MatchString(st):
			m := reCtxNested.FindStringSubmatch(st)
			ctx[m[1]] = map[string]any{m[2]: m[3]}
		case reCtxTK.MatchString(st):
			ctx["targetingKey"] = reCtxTK.FindStringSubmatch(st)[1]
		case reValue.MatchString(st):
			want := reValue.FindStringSubmatch(st)[1]
			if !sameValue(typ, value, want) {
				t.Errorf("value = %#v, want %q (result %+v)", value, want, res)
			}
		case reReason.MatchString(st):
			if want := reReason.FindStringSubmatch(st)[1]; string(res.Reason) != want {
				t.Errorf("reason = %s, want %s (result %+v)", res.Reason, want, res)
			}
		case reVariant.MatchString(st):
			if want := reVariant.FindStringSubmatch(st)[1]; res.Variant != want {
				t.Errorf("variant = %s, want %s", res.Variant, want)
			}
		case reErrCode.MatchString(st):
			if want := reErrCode.FindStringSubmatch(st)[1]; string(code) != want {
				t.Errorf("error code = %q, want %q (result %+v)", code, want, res)
			}
		case strings.HasSuffix(st, "the resolved metadata is empty"):
			if len(res.Metadata) != 0 {
				t.Errorf("metadata = %v, want empty", res.Metadata)
			}
		case strings.HasSuffix(st, "the resolved metadata should contain"):
			for _, row := range sc.table[1:] {
				got, ok := res.Metadata[row[0]]
				if !ok || !sameValue(row[1], normalizeMeta(got), row[2]) {
					t.Errorf("metadata[%s] = %#v, want %s %s", row[0], got, row[1], row[2])
				}
			}
		default:
			t.Fatalf("unsupported step %q", st)
		}
	}
}

func normalizeMeta(v any) any {
	if n, ok := v.(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			return i
		}
		f, _ := n.Float64()
		return f
	}
	return v
}

// evalTyped evaluates like an OpenFeature provider: a typed request, with
// the fallback on errors and TYPE_MISMATCH when the value has another type.
func evalTyped(snap *evaluator.Snapshot, broken map[string]bool, typ, key, fallback string, ctx map[string]any) (evaluator.Result, any, evaluator.ErrorCode) {
	fb := fallbackValue(typ, fallback)
	if broken[key] {
		return evaluator.Result{Key: key, Reason: evaluator.ReasonError, ErrorCode: evaluator.CodeParseError}, fb, evaluator.CodeParseError
	}
	r := snap.Evaluate(key, evaluator.ContextFromMap(ctx))
	if r.ErrorCode != "" || !r.HasValue {
		return r, fb, r.ErrorCode
	}
	ok := false
	switch typ {
	case "Boolean":
		_, ok = r.Value.(bool)
	case "String":
		_, ok = r.Value.(string)
	case "Integer":
		_, ok = r.Value.(int64)
	case "Float":
		switch r.Value.(type) {
		case int64, float64:
			ok = true
		}
	case "Object":
		_, ok = r.Value.(map[string]any)
	}
	if !ok {
		return r, fb, evaluator.CodeTypeMismatch
	}
	return r, r.Value, ""
}

func fallbackValue(typ, s string) any {
	switch typ {
	case "Boolean":
		return s == "true"
	case "Integer":
		i, _ := strconv.ParseInt(s, 10, 64)
		return i
	case "Float":
		f, _ := strconv.ParseFloat(s, 64)
		return f
	case "Object":
		var m map[string]any
		_ = json.Unmarshal([]byte(s), &m)
		return m
	}
	return s
}

func typedValue(t *testing.T, typ, s string) any {
	switch typ {
	case "Integer":
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("integer %q: %v", s, err)
		}
		return i
	case "Float":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("float %q: %v", s, err)
		}
		return f
	case "Boolean":
		return s == "true"
	}
	return s
}

func sameValue(typ string, got any, want string) bool {
	switch typ {
	case "Integer", "Float":
		w, err := strconv.ParseFloat(want, 64)
		if err != nil {
			return false
		}
		switch g := got.(type) {
		case int64:
			return float64(g) == w
		case float64:
			return math.Abs(g-w) < 1e-9
		}
		return false
	case "Boolean":
		b, ok := got.(bool)
		return ok && strconv.FormatBool(b) == want
	case "Object":
		var w any
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			return false
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(w)
		return string(gj) == string(wj)
	}
	return fmt.Sprint(got) == want
}

// logDrift compares the vendored test bed with the shared reference copy
// when one exists, so a newer test bed there is noticed. It only logs: the
// vendored copy is what the test asserts against.
func logDrift(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(sharedTestbed); err != nil {
		return
	}
	var differ []string
	for _, dir := range []string{"evaluator/flags", "evaluator/gherkin", "flags", "gherkin"} {
		shared, _ := filepath.Glob(filepath.Join(sharedTestbed, dir, "*"))
		own, _ := filepath.Glob(filepath.Join(testbed, dir, "*"))
		if len(shared) != len(own) {
			differ = append(differ, dir+" (file count)")
			continue
		}
		for _, f := range shared {
			a, errA := os.ReadFile(f)
			b, errB := os.ReadFile(filepath.Join(testbed, dir, filepath.Base(f)))
			if errA != nil || errB != nil || string(a) != string(b) {
				differ = append(differ, filepath.Join(dir, filepath.Base(f)))
			}
		}
	}
	if len(differ) > 0 {
		t.Logf("vendored test bed differs from %s in %v; refresh testdata/flagd-testbed if the shared copy is newer", sharedTestbed, differ)
	}
}
