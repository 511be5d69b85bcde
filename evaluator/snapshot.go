package evaluator

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pennon-dev/pennon/internal/cowmap"
)

// Snapshot is an immutable, compiled flag set at one version. Safe for
// concurrent use by any number of goroutines.
type Snapshot struct {
	version uint64
	id      uint64 // unique per snapshot in this process (see ID)
	flags   *cowmap.Map[*Flag]
	keys    []string
	now     func() time.Time
	// requiredBy maps a flag to the flags that name it as a prerequisite
	// (sorted), so Update finds what to relink without scanning the set.
	requiredBy *cowmap.Map[[]string]
}

// Flag is one compiled flag inside a Snapshot.
type Flag struct {
	key      string
	variants variantSet
	def      *variant // nil: code default
	rule     node     // nil: no targeting
	safe     *variant
	prereqs  []prereq
	reads    []string // context paths the answer depends on, incl. prerequisites'
	cost     int      // compiled rule nodes, including prerequisites'
	// own is what the flag's rules read and cost before prerequisites are
	// folded in: Update relinks a dependent from it without recompiling.
	own     ownFacts
	expires int64 // unix nanoseconds; 0 = never
	// experiment is the flag's experiment metrics (nil: not an experiment).
	experiment []string

	// fb is the cheaper rule served under pressure; nil when the flag has
	// none (most flags: kept out of line, it would make every Flag 80
	// bytes larger — 8 MB at 100,000 flags).
	fb *fallbackRule

	metadata     map[string]any
	metadataJSON []byte

	// The one-byte fields last, together: spread between the words they
	// cost 26 bytes of padding per flag.
	disabled    bool
	propagation Propagation
	failMode    FailMode
	readsTime   bool
	dynamic     bool // reads the context in ways that cannot be enumerated
	collected   bool // prerequisites folded into reads/cost (build time only)
}

type ownFacts struct {
	reads     []string
	readsTime bool
	dynamic   bool
	cost      int
}

// fallbackRule is a flag's fallbackTargeting compiled: rule is nil for
// the default variant; meta[reason] is the flag's metadata plus
// pennonTargeting "fallback" and the reason, encoded at load so a degraded
// answer allocates nothing.
type fallbackRule struct {
	rule   node
	budget time.Duration
	meta   [numFallbackReasons]fallbackMeta
}

type fallbackMeta struct {
	m map[string]any
	j []byte
}

type variant struct {
	name  string
	value any    // for Result.Value: bool, string, int64, float64, map, slice
	json  []byte // encoded value
}

type prereq struct {
	flag     *Flag
	key      string
	want     string
	metadata map[string]any // flag metadata + the failure, precomputed
	metaJSON []byte
}

// String formats a problem as `path: reason`.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Reason
	}
	return p.Path + ": " + p.Reason
}

// NewSnapshot compiles specs into a snapshot at version. It reports every
// problem at once and returns a nil snapshot if there are any.
func NewSnapshot(version uint64, specs []FlagSpec, opts SnapshotOptions) (*Snapshot, []Problem) {
	s := &Snapshot{version: version, id: snapshotIDs.Add(1), flags: cowmap.New[*Flag](len(specs)), now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Compiled != nil && len(opts.Compiled) != len(specs) {
		return nil, []Problem{{Path: "flags", Reason: fmt.Sprintf("internal: %d compiled flags for %d specs", len(opts.Compiled), len(specs))}}
	}
	// The flags in key order, each with its spec: linking walks this list
	// rather than looking every key up again (100,000 flags at start-up).
	type entry struct {
		f  *Flag
		sp *FlagSpec
	}
	entries := make([]entry, 0, len(specs))
	problems := compileEach(specs, opts.Compiled, func(sp *FlagSpec, f *Flag) {
		s.flags.Set(sp.Key, f)
		entries = append(entries, entry{f, sp})
	})
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.f.key, b.f.key) })
	s.keys = make([]string, len(entries))
	for i, e := range entries {
		s.keys[i] = e.f.key
	}
	// Resolve prerequisites once every flag exists.
	for _, e := range entries {
		problems = append(problems, linkPrereqs(e.f, e.sp.Prerequisites, s.flags)...)
	}
	if cyc := findCycle(s.flags, s.keys); cyc != nil {
		problems = append(problems, Problem{Path: "flags." + cyc[0] + ".prerequisites", Reason: "cycle " + strings.Join(cyc, " → ")})
	}
	if len(problems) > 0 {
		return nil, problems
	}
	edges := map[string][]string{}
	for _, e := range entries {
		if len(e.f.prereqs) == 0 {
			continue
		}
		for _, p := range e.f.prereqs {
			edges[e.f.key] = append(edges[e.f.key], p.key)
		}
		collectReads(e.f, map[*Flag]bool{})
	}
	s.requiredBy = cowmap.Index(edges)
	return s, nil
}

// compileEach compiles every spec with a non-empty key not seen before in
// specs (or takes compiled[i], when compiled is not nil), hands each flag
// to add and returns the problems.
func compileEach(specs []FlagSpec, compiled []CompiledFlag, add func(sp *FlagSpec, f *Flag)) []Problem {
	var problems []Problem
	// Keys in strictly ascending order (a parsed document's) cannot
	// repeat: checking that is a compare per flag, where the set of keys
	// seen cost 20-30 ms at 100,000 flags.
	var seen map[string]bool
	if !strictlyAscending(specs) {
		seen = make(map[string]bool, len(specs))
	}
	if compiled == nil {
		compiled = compileSpecs(specs)
	}
	for i := range specs {
		sp := &specs[i]
		if sp.Key == "" {
			problems = append(problems, Problem{Path: "flags", Reason: "flag key must not be empty"})
			continue
		}
		if seen != nil {
			if seen[sp.Key] {
				problems = append(problems, Problem{Path: "flags." + sp.Key, Reason: "duplicate flag key"})
				continue
			}
			seen[sp.Key] = true
		}
		c := compiled[i]
		if c.flag == nil {
			c = CompileFlag(sp)
		}
		problems = append(problems, c.problems...)
		add(sp, c.flag)
	}
	return problems
}

// strictlyAscending reports whether every spec's key sorts after the one
// before it.
func strictlyAscending(specs []FlagSpec) bool {
	for i := 1; i < len(specs); i++ {
		if specs[i-1].Key >= specs[i].Key {
			return false
		}
	}
	return true
}

// linkPrereqs resolves f's prerequisites (flag key → required variant)
// against flags, in key order, with the problems NewSnapshot reports.
func linkPrereqs(f *Flag, wants map[string]string, flags *cowmap.Map[*Flag]) []Problem {
	var problems []Problem
	names := make([]string, 0, len(wants))
	for k := range wants {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, pk := range names {
		want := wants[pk]
		path := "flags." + f.key + ".prerequisites." + pk
		pf, ok := flags.Get(pk)
		switch {
		case !ok:
			problems = append(problems, Problem{Path: path, Reason: fmt.Sprintf("prerequisite flag %q does not exist", pk)})
			continue
		case pk == f.key:
			problems = append(problems, Problem{Path: path, Reason: "a flag cannot be its own prerequisite"})
			continue
		}
		if pf.variants.get(want) == nil {
			problems = append(problems, Problem{Path: path, Reason: fmt.Sprintf("%q is not a variant of %s (have: %s)", want, pk, strings.Join(pf.variantNames(), ", "))})
			continue
		}
		md := make(map[string]any, len(f.metadata)+2)
		for k, v := range f.metadata {
			md[k] = v
		}
		md["prerequisiteFailed"] = pk
		md["prerequisiteRequired"] = want
		mj, _ := json.Marshal(md)
		f.prereqs = append(f.prereqs, prereq{flag: pf, key: pk, want: want, metadata: md, metaJSON: mj})
	}
	return problems
}

// findCycle returns the first prerequisite cycle reachable from starts, as
// a → b → a with a its smallest key.
func findCycle(flags *cowmap.Map[*Flag], starts []string) []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(k string) []string
	visit = func(k string) []string {
		color[k] = grey
		stack = append(stack, k)
		f, _ := flags.Get(k)
		for _, p := range f.prereqs {
			switch color[p.key] {
			case grey:
				i := len(stack) - 1
				for stack[i] != p.key {
					i--
				}
				return rotateCycle(stack[i:])
			case white:
				if c := visit(p.key); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[k] = black
		return nil
	}
	for _, k := range starts {
		// A flag without prerequisites is on no cycle: most flags, and
		// skipping them keeps a 100,000-flag start-up from colouring each.
		if f, _ := flags.Get(k); f == nil || len(f.prereqs) == 0 {
			continue
		}
		if color[k] == white {
			if c := visit(k); c != nil {
				return c
			}
		}
	}
	return nil
}

// rotateCycle returns the cycle through keys as min → … → min, starting at
// its smallest key, so that the same cycle is reported the same way
// whichever flag the search entered it from (a full parse and an
// incremental Apply enter from different flags).
func rotateCycle(keys []string) []string {
	m := 0
	for i, k := range keys {
		if k < keys[m] {
			m = i
		}
	}
	out := make([]string, 0, len(keys)+1)
	out = append(append(out, keys[m:]...), keys[:m]...)
	return append(out, keys[m])
}

// collectReads folds prerequisites' reads into a flag's own. It writes a
// new reads slice: a flag relinked by Update starts from its own reads,
// which the snapshot it came from still serves.
func collectReads(f *Flag, seen map[*Flag]bool) {
	if seen[f] || f.collected {
		return
	}
	seen[f] = true
	defer func() { f.collected = true }()
	if len(f.prereqs) == 0 {
		return // its own reads, sorted by compileFlag, are all of them
	}
	set := map[string]struct{}{}
	for _, r := range f.reads {
		set[r] = struct{}{}
	}
	for _, p := range f.prereqs {
		collectReads(p.flag, seen)
		for _, r := range p.flag.reads {
			set[r] = struct{}{}
		}
		f.readsTime = f.readsTime || p.flag.readsTime
		f.dynamic = f.dynamic || p.flag.dynamic
		f.cost += p.flag.cost + 1
	}
	reads := make([]string, 0, len(set))
	for r := range set {
		reads = append(reads, r)
	}
	sort.Strings(reads)
	f.reads = reads
}

func compileFlag(sp *FlagSpec, base string) (*Flag, []Problem) {
	f := &Flag{
		key:         sp.Key,
		disabled:    sp.Disabled,
		variants:    make(variantSet, 0, len(sp.Variants)),
		propagation: sp.Propagation,
		failMode:    sp.FailMode,
		metadata:    sp.Metadata,
	}
	if !sp.Expires.IsZero() {
		f.expires = sp.Expires.UnixNano()
	}
	var problems []Problem
	if len(sp.Variants) == 0 {
		problems = append(problems, Problem{Path: base + ".variants", Reason: "a flag needs at least one variant"})
	}
	kinds := map[string]string{}
	for _, v := range sp.Variants {
		vr, err := newVariant(v.Name, v.Value)
		if err != nil {
			problems = append(problems, Problem{Path: base + ".variants." + v.Name, Reason: err.Error()})
			continue
		}
		f.variants.put(vr)
		kinds[v.Name] = valueKind(vr.value)
	}
	if k := mixedKinds(kinds); k != "" {
		problems = append(problems, Problem{Path: base + ".variants", Reason: "variants must share one type (" + k + ")"})
	}
	if sp.HasDefaultVariant {
		if f.def = f.variants.get(sp.DefaultVariant); f.def == nil {
			problems = append(problems, Problem{Path: base + ".defaultVariant", Reason: fmt.Sprintf("%q is not a variant (have: %s)", sp.DefaultVariant, strings.Join(f.variantNames(), ", "))})
		}
	}
	f.experiment = sp.Experiment
	if sp.SafeVariant != "" {
		if f.safe = f.variants.get(sp.SafeVariant); f.safe == nil {
			problems = append(problems, Problem{Path: base + ".safeVariant", Reason: fmt.Sprintf("%q is not a variant (have: %s)", sp.SafeVariant, strings.Join(f.variantNames(), ", "))})
		}
	}
	if !isEmptyRule(sp.Targeting) {
		c := newCompiler(sp.Key)
		f.rule = c.compile(normalizeRule(sp.Targeting), "")
		for _, p := range c.problems {
			problems = append(problems, Problem{Path: joinPath(base+".targeting", p.Path), Reason: p.Reason})
		}
		for r := range c.reads {
			f.reads = append(f.reads, r)
		}
		sort.Strings(f.reads)
		f.readsTime = c.clock
		f.dynamic = c.dynamic
		f.cost = c.nodes
	}
	if sp.HasFallback {
		problems = append(problems, compileFallback(f, sp, base)...)
	}
	f.own = ownFacts{reads: f.reads, readsTime: f.readsTime, dynamic: f.dynamic, cost: f.cost}
	if f.metadata == nil {
		f.metadata = noMetadata
	}
	if len(f.metadata) == 0 {
		f.metadataJSON = emptyObject // most flags: one shared "{}"
	} else if mj, err := json.Marshal(f.metadata); err != nil {
		problems = append(problems, Problem{Path: base + ".metadata", Reason: err.Error()})
	} else {
		f.metadataJSON = mj
	}
	if f.fb != nil {
		for why := FallbackReason(0); why < numFallbackReasons; why++ {
			md := make(map[string]any, len(f.metadata)+2)
			for k, v := range f.metadata {
				md[k] = v
			}
			md["pennonTargeting"] = "fallback"
			md["pennonFallbackReason"] = why.String()
			j, _ := json.Marshal(md) // f.metadata marshalled above
			f.fb.meta[why] = fallbackMeta{m: md, j: j}
		}
	}
	return f, problems
}

// compileFallback compiles the flag's fallbackTargeting. Its context reads
// join the flag's own: a cache key or a bulk plan built from Reads then
// covers whichever rule answers, so neither has to know which one did.
// Cost stays the full rule's: it decides whether caching pays, and the
// fallback only serves uncached answers.
func compileFallback(f *Flag, sp *FlagSpec, base string) []Problem {
	var problems []Problem
	if sp.TargetingBudget < 0 {
		problems = append(problems, Problem{Path: base + ".targetingBudget", Reason: "must be positive (e.g. \"20us\")"})
	}
	f.fb = &fallbackRule{budget: sp.TargetingBudget}
	if isEmptyRule(sp.FallbackTargeting) {
		return problems
	}
	c := newCompiler(sp.Key)
	f.fb.rule = c.compile(normalizeRule(sp.FallbackTargeting), "")
	for _, p := range c.problems {
		problems = append(problems, Problem{Path: joinPath(base+".fallbackTargeting", p.Path), Reason: p.Reason})
	}
	seen := make(map[string]bool, len(f.reads))
	for _, r := range f.reads {
		seen[r] = true
	}
	for r := range c.reads {
		if !seen[r] {
			f.reads = append(f.reads, r)
		}
	}
	sort.Strings(f.reads)
	f.readsTime = f.readsTime || c.clock
	f.dynamic = f.dynamic || c.dynamic
	return problems
}

func (f *Flag) variantNames() []string {
	names := make([]string, len(f.variants))
	for i, v := range f.variants {
		names[i] = v.name // sorted: the set is
	}
	return names
}

// newVariant precomputes a variant's Go value and its JSON. Integers stay
// integers (1 is served as 1, not 1.0) because OFREP clients type-check them.
func newVariant(name string, v any) (*variant, error) {
	var goVal any
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			goVal = i
		} else if fl, err := x.Float64(); err == nil && !math.IsInf(fl, 0) {
			goVal = fl
		} else {
			return nil, fmt.Errorf("number %s is out of range", x)
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			goVal = int64(x)
		} else {
			goVal = x
		}
	case int:
		goVal = int64(x)
	case int64:
		goVal = x
	case nil:
		return nil, fmt.Errorf("a variant value must not be null")
	default:
		goVal = v
	}
	if b, isBool := v.(bool); isBool { // on/off flags: shared encodings
		j := falseJSON
		if b {
			j = trueJSON
		}
		return &variant{name: name, value: goVal, json: j}, nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cannot encode value: %v", err)
	}
	return &variant{name: name, value: goVal, json: j}, nil
}

func valueKind(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case string:
		return "string"
	case int64, float64:
		return "number"
	default:
		return "object"
	}
}

// mixedKinds describes the variant kinds when they differ, "" when one kind.
func mixedKinds(kinds map[string]string) string {
	seen := map[string]bool{}
	for _, k := range kinds {
		seen[k] = true
	}
	if len(seen) <= 1 {
		return ""
	}
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ": " + kinds[n]
	}
	return strings.Join(parts, ", ")
}

// Version is the flag-set version this snapshot was built at.
func (s *Snapshot) Version() uint64 { return s.version }

// snapshotIDs numbers snapshots in this process.
var snapshotIDs atomic.Uint64

// ID identifies this snapshot among all snapshots of the process. Two
// snapshots can share a version — a sidecar rewound to the control plane's
// truth after a restore from backup, or repaired from same-version drift —
// so anything keyed by "which flag set answered" (response cache keys, bulk
// ETags) uses ID, never Version alone.
func (s *Snapshot) ID() uint64 { return s.id }

// Len is the number of flags.
func (s *Snapshot) Len() int { return s.flags.Len() }

// Keys returns the flag keys in sorted order (shared; do not modify).
func (s *Snapshot) Keys() []string { return s.keys }

// Flag returns the compiled flag, or nil when there is none with that key.
func (s *Snapshot) Flag(key string) *Flag {
	f, _ := s.flags.Get(key)
	return f
}

// Evaluate evaluates flag key for ctx (nil means an empty context). An unknown
// key gives reason ERROR with CodeFlagNotFound.
func (s *Snapshot) Evaluate(key string, ctx *Context) Result {
	f, _ := s.flags.Get(key)
	if f == nil {
		return Result{Key: key, Reason: ReasonError, ErrorCode: CodeFlagNotFound,
			ErrorDetails: "flag '" + key + "' was not found", MetadataJSON: emptyObject}
	}
	return s.EvaluateFlag(f, ctx)
}

// Shared read-only encodings (capacity = length, so an append copies).
var (
	emptyObject = []byte("{}")[:2:2]
	trueJSON    = []byte("true")[:4:4]
	falseJSON   = []byte("false")[:5:5]
)

// noMetadata is the metadata of every flag that has none: read-only,
// shared instead of an empty map per flag.
var noMetadata = map[string]any{}

// EvaluateFlag is Evaluate for a flag already looked up with Flag.
func (s *Snapshot) EvaluateFlag(f *Flag, ctx *Context) Result {
	if ctx == nil {
		ctx = NewContext()
	}
	return s.eval(f, ctx, 0)
}

func (s *Snapshot) eval(f *Flag, ctx *Context, depth int) Result {
	return s.evalRule(f, f.rule, nil, ctx, depth)
}

// EvaluateFallback evaluates f with its fallbackTargeting instead of its
// targeting; why goes into the metadata (pennonTargeting "fallback",
// pennonFallbackReason). Prerequisites are evaluated with their own full
// rules. A flag without a fallback (HasFallback false) is evaluated as by
// EvaluateFlag: callers never change the answer of a flag that did not ask
// for it. Like EvaluateFlag it does not allocate.
func (s *Snapshot) EvaluateFallback(f *Flag, ctx *Context, why FallbackReason) Result {
	if f.fb == nil || why >= numFallbackReasons {
		return s.EvaluateFlag(f, ctx)
	}
	if ctx == nil {
		ctx = NewContext()
	}
	return s.evalRule(f, f.fb.rule, &f.fb.meta[why], ctx, 0)
}

// evalRule evaluates f with rule; fb, when not nil, replaces the metadata
// of answers the rule decided (a fallback answer says so).
func (s *Snapshot) evalRule(f *Flag, rule node, fb *fallbackMeta, ctx *Context, depth int) Result {
	if f.disabled {
		// flagd answers a disabled flag with the caller's code default.
		return f.result(nil, ReasonDisabled)
	}
	for i := range f.prereqs {
		p := &f.prereqs[i]
		pr := s.eval(p.flag, ctx, depth+1)
		if p.flag.disabled || pr.Variant != p.want {
			r := f.result(f.def, ReasonDefault)
			r.Metadata, r.MetadataJSON = p.metadata, p.metaJSON
			return r
		}
	}
	r := s.decide(f, rule, ctx)
	if fb != nil {
		r.Metadata, r.MetadataJSON = fb.m, fb.j
	}
	return r
}

// decide runs rule (nil: none) and maps its output to a variant.
func (s *Snapshot) decide(f *Flag, rule node, ctx *Context) Result {
	if rule == nil {
		if f.def == nil {
			return f.result(nil, ReasonDefault) // code default, as flagd reports it
		}
		return f.result(f.def, ReasonStatic)
	}
	e := &ctx.env
	*e = env{root: ctx, flagKey: f.key, now: s.now}
	out := rule(e)
	failed := e.fail
	*e = env{}
	if failed != "" {
		return f.errResult(CodeParseError, "flag "+f.key+": targeting could not be evaluated: "+failed)
	}
	var name string
	switch x := out.(type) {
	case nil:
		return f.result(f.def, ReasonDefault)
	case string:
		name = x
	case bool:
		if x {
			name = "true"
		} else {
			name = "false"
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			// flagd encodes the rule's result as JSON to read the variant
			// name; NaN and ±Inf cannot be encoded, so it answers PARSE_ERROR.
			return f.errResult(CodeParseError, "flag "+f.key+": targeting returned "+formatNumber(x)+", which is not a variant name (flagd answers PARSE_ERROR)")
		}
		name = formatNumber(x)
	default:
		return f.errResult(CodeGeneral, "targeting returned "+typeName(out)+", expected a variant name")
	}
	v := f.variants.get(name)
	if v == nil {
		return f.errResult(CodeGeneral, fmt.Sprintf("targeting returned variant %q, which flag %s does not have", name, f.key))
	}
	return f.result(v, ReasonTargetingMatch)
}

func (f *Flag) result(v *variant, reason Reason) Result {
	r := Result{Key: f.key, Reason: reason, Metadata: f.metadata, MetadataJSON: f.metadataJSON}
	if v != nil {
		r.Variant, r.HasValue, r.Value, r.ValueJSON = v.name, true, v.value, v.json
	}
	return r
}

func (f *Flag) errResult(code ErrorCode, details string) Result {
	return Result{Key: f.key, Reason: ReasonError, ErrorCode: code, ErrorDetails: details,
		Metadata: f.metadata, MetadataJSON: f.metadataJSON}
}

// Key is the flag's key.
func (f *Flag) Key() string { return f.key }

// HasFallback reports whether the flag declares fallbackTargeting: only
// such flags may be degraded (EvaluateFallback).
func (f *Flag) HasFallback() bool { return f.fb != nil }

// TargetingBudget is the flag's own evaluation budget (targetingBudget),
// zero when it uses the sidecar's default.
func (f *Flag) TargetingBudget() time.Duration {
	if f.fb == nil {
		return 0
	}
	return f.fb.budget
}

// Propagation is the flag's propagation strategy.
func (f *Flag) Propagation() Propagation { return f.propagation }

// FailMode is the flag's fail mode.
func (f *Flag) FailMode() FailMode { return f.failMode }

// ReadsTime reports whether the flag's answer can depend on the clock
// ($flagd.timestamp), directly or through a prerequisite. Such answers must
// not be cached.
func (f *Flag) ReadsTime() bool { return f.readsTime }

// Reads lists the context paths the flag's answer depends on (shared).
func (f *Flag) Reads() []string { return f.reads }

// AppendCacheKey appends to dst an encoding of exactly the context values the
// flag's answer depends on (its own rules and its prerequisites'), so that two
// contexts with equal keys get equal answers. ok is false when the flag cannot
// be cached (reads the clock, or reads the context in a way that cannot be
// enumerated, such as a computed var path).
func (f *Flag) AppendCacheKey(dst []byte, ctx *Context) ([]byte, bool) {
	if f.readsTime || f.dynamic {
		return dst, false
	}
	for _, r := range f.reads {
		dst = append(dst, r...)
		dst = append(dst, 0)
		dst = appendKeyValue(dst, ctx.lookupPath(r))
		dst = append(dst, 0)
	}
	return dst, true
}

// appendKeyValue appends a type-tagged, unambiguous encoding of v.
func appendKeyValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, 'n')
	case bool:
		if x {
			return append(dst, 't')
		}
		return append(dst, 'f')
	case float64:
		dst = append(dst, 'd')
		return strconv.AppendFloat(dst, x, 'g', -1, 64)
	case string:
		dst = append(dst, 's')
		dst = strconv.AppendInt(dst, int64(len(x)), 10)
		dst = append(dst, ':')
		return append(dst, x...)
	default:
		b, _ := json.Marshal(x) // maps marshal with sorted keys: deterministic
		dst = append(dst, 'j')
		dst = strconv.AppendInt(dst, int64(len(b)), 10)
		dst = append(dst, ':')
		return append(dst, b...)
	}
}

// SafeResult is the answer for failMode closed when freshness cannot be
// established: the flag owner's safeVariant as a successful answer with a
// value, because an error answer carries no value and would hand the
// decision to whatever default is in the application's code — the opposite
// of what failMode closed asks for. The reason is OpenFeature's STALE (the
// value is not authoritative for the control plane's current state);
// ERROR is not used because OpenFeature pairs it with an error code, and an
// error code makes providers discard the value. The metadata is the flag's,
// plus pennonFailMode "closed" and pennonFailReason (why, from the caller).
//
// config requires a safeVariant with failMode closed, so the fallbacks only
// serve hand-built specs: the defaultVariant when there is no safeVariant,
// else no value (the code default), each said in pennonFailReason. It
// allocates: it serves the degraded path, not the hot one.
func (f *Flag) SafeResult(why string) Result {
	v := f.safe
	if v == nil {
		v = f.def
		if v != nil {
			why += "; the flag has no safeVariant, so its defaultVariant is served"
		} else {
			why += "; the flag has neither safeVariant nor defaultVariant, so the caller's code default applies"
		}
	}
	r := f.result(v, ReasonStale)
	md := make(map[string]any, len(f.metadata)+2)
	for k, x := range f.metadata {
		md[k] = x
	}
	md["pennonFailMode"] = "closed"
	md["pennonFailReason"] = why
	r.Metadata = md
	if b, err := json.Marshal(md); err == nil {
		r.MetadataJSON = b
	} else { // metadata came from JSON: cannot fail, but never emit a broken body
		r.MetadataJSON = []byte(`{"pennonFailMode":"closed"}`)
	}
	return r
}

// HasSafeVariant reports whether the flag names a safeVariant.
func (f *Flag) HasSafeVariant() bool { return f.safe != nil }

// ExperimentMetrics lists the tracking-event keys of the flag's experiment;
// nil when the flag is not an experiment.
func (f *Flag) ExperimentMetrics() []string { return f.experiment }

// NeedsContext reports whether the flag's answer depends on the evaluation
// context at all. When it does not, callers can validate the request body
// instead of decoding it.
func (f *Flag) NeedsContext() bool { return len(f.reads) > 0 || f.dynamic }

// Cost is a rough measure of the work one evaluation does (compiled rule
// nodes, prerequisites included). Caching an answer only pays when it is
// well above the cost of building a cache key and looking it up.
func (f *Flag) Cost() int { return f.cost }

// ExpiredAt reports whether the flag's expiry date has passed at now.
func (f *Flag) ExpiredAt(now time.Time) bool {
	return f.expires != 0 && now.UnixNano() > f.expires
}
