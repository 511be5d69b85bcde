package evaluator

// This file is the evaluator's API surface with placeholder bodies, so that
// packages written in parallel compile from the start. Every function here is
// replaced by its real implementation (and this file deleted) by the
// evaluator's owner; the signatures are the contract.

// DefaultLimits are the context limits used when a Limits field is zero.
var DefaultLimits = Limits{MaxBytes: 32 << 10, MaxDepth: 16, MaxKeys: 512}

// Snapshot is an immutable, compiled flag set at one version. Safe for
// concurrent use by any number of goroutines.
type Snapshot struct {
	version uint64
	flags   map[string]*Flag
	keys    []string
}

// Flag is one compiled flag inside a Snapshot.
type Flag struct {
	key string
}

// Context is a decoded evaluation context. Reusable: Reset it and decode the
// next request into it (pool them to keep the request path allocation-free).
// Not safe for concurrent use.
type Context struct {
	targetingKey string
}

// NewSnapshot compiles specs into a snapshot at version. It reports every
// problem at once (paths like `flags.<key>.targeting.if[0]`, prerequisite
// cycles, unknown prerequisite flags or variants, default/safe variants that
// are not variants, variants of mixed types) and returns a nil snapshot if
// there are any.
func NewSnapshot(version uint64, specs []FlagSpec, opts SnapshotOptions) (*Snapshot, []Problem) {
	panic("evaluator: NewSnapshot not implemented yet")
}

// CompileTargeting checks one targeting rule on its own and returns its
// problems, with paths relative to the rule (e.g. `if[0]`). Used by config to
// validate $evaluators and rules before a whole snapshot is built.
func CompileTargeting(rule any) []Problem {
	panic("evaluator: CompileTargeting not implemented yet")
}

// Version is the flag-set version this snapshot was built at.
func (s *Snapshot) Version() uint64 { return s.version }

// Len is the number of flags.
func (s *Snapshot) Len() int { return len(s.flags) }

// Keys returns the flag keys in sorted order (shared; do not modify).
func (s *Snapshot) Keys() []string { return s.keys }

// Flag returns the compiled flag, or nil when there is none with that key.
func (s *Snapshot) Flag(key string) *Flag { return s.flags[key] }

// Evaluate evaluates flag key for ctx (nil means an empty context). An unknown
// key gives reason ERROR with CodeFlagNotFound. Allocation-free on success.
func (s *Snapshot) Evaluate(key string, ctx *Context) Result {
	panic("evaluator: Evaluate not implemented yet")
}

// EvaluateFlag is Evaluate for a flag already looked up with Flag.
func (s *Snapshot) EvaluateFlag(f *Flag, ctx *Context) Result {
	panic("evaluator: EvaluateFlag not implemented yet")
}

// Key is the flag's key.
func (f *Flag) Key() string { return f.key }

// Propagation is the flag's propagation strategy.
func (f *Flag) Propagation() Propagation { panic("not implemented") }

// FailMode is the flag's fail mode.
func (f *Flag) FailMode() FailMode { panic("not implemented") }

// ReadsTime reports whether the flag's answer can depend on the clock
// ($flagd.timestamp), directly or through a prerequisite. Such answers must
// not be cached.
func (f *Flag) ReadsTime() bool { panic("not implemented") }

// AppendCacheKey appends to dst an encoding of exactly the context values the
// flag's answer depends on (its own rules and its prerequisites'), so that two
// contexts with equal keys get equal answers. ok is false when the flag cannot
// be cached (reads the clock, or reads the context in a way that cannot be
// enumerated, such as a computed var path).
func (f *Flag) AppendCacheKey(dst []byte, ctx *Context) (key []byte, ok bool) {
	panic("not implemented")
}

// SafeResult is the answer for failMode closed: the flag's safeVariant (or
// the code default when it has none) with reason ERROR, CodeGeneral and the
// given details.
func (f *Flag) SafeResult(details string) Result { panic("not implemented") }

// NewContext returns an empty context.
func NewContext() *Context { return &Context{} }

// Reset empties c for reuse, keeping its memory.
func (c *Context) Reset() { *c = Context{} }

// Decode replaces c with the JSON object in data. Malformed JSON gives a
// *ContextError with CodeParseError; a non-object or a context past lim gives
// CodeInvalidContext. On error c is left empty.
func (c *Context) Decode(data []byte, lim Limits) error { panic("not implemented") }

// DecodeField is Decode for member `field` of the JSON object in data (the
// OFREP request body is `{"context": {...}}`). A missing or null member gives
// an empty context; anything else that is not an object is CodeInvalidContext.
func (c *Context) DecodeField(data []byte, field string, lim Limits) error {
	panic("not implemented")
}

// TargetingKey returns the context's targetingKey when it is a string.
func (c *Context) TargetingKey() (string, bool) { return c.targetingKey, c.targetingKey != "" }

// ContextFromMap builds a context from decoded JSON (tests, the CLI).
func ContextFromMap(m map[string]any) *Context { panic("not implemented") }

// ContextError is a context that could not be decoded.
type ContextError struct {
	Code   ErrorCode // CodeParseError or CodeInvalidContext
	Detail string
}

func (e *ContextError) Error() string { return string(e.Code) + ": " + e.Detail }

// String formats a problem as `path: reason`.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Reason
	}
	return p.Path + ": " + p.Reason
}
