package config

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/cowmap"
	"github.com/pennon-dev/pennon/internal/parallel"
)

// parseFast is Parse for documents with nothing unusual in them, which is
// nearly all of them: one pass over the bytes (jsonReader) instead of
// encoding/json decoding each flag three or four times, and each flag's
// canonical JSON written directly instead of by reflection. It builds
// exactly the document the exact path builds (TestParseFastMatchesExact,
// FuzzParseFast); ok is false whenever it cannot vouch for that: a syntax
// error, a repeated key, a field it does not handle, or any problem at all
// to report. Then Parse starts over on the exact path, so every message a
// user sees comes from one place.
//
// With keepDocs false (ParseCompiled) the returned document keeps no flags:
// each flag's hash leaf (key and canonical JSON) goes to pre.pieces instead, and
// its definition is garbage as soon as it is compiled.
func parseFast(data []byte, keepDocs bool) (doc *Document, p parser, pre *precompiled, ok bool) {
	r := jsonReader{data: data}
	doc = &Document{evaluators: map[string]json.RawMessage{}}
	// Sized for a flag per 128 bytes of document (generated flags take
	// ~170, real ones with rules more): appending from empty copied the
	// list ~17 times over at 100,000 flags, each copy into fresh memory.
	flags := make([]rawFlag, 0, len(data)/128)
	var seen uint
	err := r.members(func(key string, r *jsonReader) error {
		bit := uint(1) << indexOf(topLevelFields, key)
		if bit == 0 || seen&bit != 0 {
			return errSlowPath // unknown or repeated: reported by the exact path
		}
		seen |= bit
		switch key {
		case "$schema":
			v, err := r.value()
			s, isStr := v.(string)
			if err != nil || !isStr {
				return errSlowPath
			}
			doc.schema = s
		case "metadata":
			raw, err := r.skip()
			if err != nil || len(duplicateKeys(raw, "metadata")) > 0 {
				return errSlowPath
			}
			doc.metadata = p.metadata(raw, "metadata")
		case "$evaluators":
			raw, err := r.skip()
			if err != nil || len(duplicateKeys(raw, "$evaluators")) > 0 {
				return errSlowPath
			}
			var evs map[string]any
			if err := decodeJSON(raw, &evs); err != nil || evs == nil {
				return errSlowPath
			}
			for name, rule := range evs {
				doc.evaluators[name] = canonicalJSON(rule)
			}
		case "flags":
			return r.members(func(key string, r *jsonReader) error {
				raw, err := r.skip()
				flags = append(flags, rawFlag{key, raw})
				return err
			})
		}
		return nil
	})
	if err != nil || r.end() != nil || seen&(1<<indexOf(topLevelFields, "flags")) == 0 || len(p.problems) > 0 {
		return nil, p, nil, false
	}
	// Sorted once here (the document keeps its keys sorted), a repeated
	// flag key is a neighbour of itself.
	slices.SortFunc(flags, func(a, b rawFlag) int { return strings.Compare(a.key, b.key) })
	keys := make([]string, len(flags))
	defs := make([][]byte, len(flags))
	for i, fl := range flags {
		if i > 0 && fl.key == keys[i-1] {
			return nil, p, nil, false
		}
		keys[i], defs[i] = fl.key, fl.def
	}
	evs := doc.decodedEvaluators()
	pre = &precompiled{specs: make([]evaluator.FlagSpec, len(keys)), compiled: make([]evaluator.CompiledFlag, len(keys))}
	if !keepDocs {
		// Each worker's leaves, sized up front from its definitions'
		// lengths (the canonical JSON is rarely longer than the text it
		// came from): grown by appending, they were 49 MB of allocations
		// for ~20 MB of leaves at 100,000 flags.
		workers := parseWorkers(len(keys))
		pre.pieces = make([][]byte, workers)
		for w := range workers {
			from, to := parallel.Share(len(keys), workers, w)
			size := 0
			for i := from; i < to; i++ {
				size += 2*8 + len(keys[i]) + len(defs[i])
			}
			pre.pieces[w] = make([]byte, 0, size)
		}
	}
	parsed, declined := parseFlags(&p, keys, defs, fastFlag, func(w, i int, f *FlagDoc) (*FlagDoc, bool) {
		sp, ps := doc.spec(keys[i], f, evs)
		if len(ps) > 0 {
			return nil, false // reported by the exact path
		}
		pre.compiled[i] = evaluator.CompileFlag(&sp)
		// NewSnapshot links the compiled flag through the spec's key and
		// prerequisites; nothing else in it is needed, and the decoded
		// rules it pointed to can go now, while this goroutine's next
		// flag can reuse their memory (keeping them all until the end
		// left the heap fragmented).
		pre.specs[i] = evaluator.FlagSpec{Key: sp.Key, Prerequisites: sp.Prerequisites}
		f.decoded = decodedRules{}
		if !keepDocs {
			// Worker w owns a contiguous range of the sorted keys
			// (parallel.Ranges), so its hash leaves are in key order.
			pre.pieces[w] = appendLeaf(pre.pieces[w], keys[i], f.json())
			return nil, true
		}
		return f, true
	})
	if declined || len(p.problems) > 0 {
		return nil, p, nil, false
	}
	doc.keys = keys
	if !keepDocs {
		doc.flags = cowmap.New[*FlagDoc](0)
		return doc, p, pre, true
	}
	doc.flags = newFlagTable(keys, parsed)
	return doc, p, pre, true
}

// ParseCompiled is Parse followed by Compile(version) and Hash for a
// caller that needs only the snapshot and the document's identity (a
// sidecar serving a file): the same validation, problems, snapshot and
// hash, but no Document is kept. A document that keeps its flags left
// their definitions' memory, once dropped, as holes between the compiled
// flags (at 100,000 flags about 70 MB of heap spans a file-mode sidecar
// kept resident); here each definition is garbage as soon as its flag is
// compiled, and the flags' hash leaves (key and canonical JSON) are
// gathered in a few large buffers that are freed whole.
func ParseCompiled(data []byte, version uint64) (*evaluator.Snapshot, string, error) {
	// The exact path, as Parse takes it once the fast path has declined
	// (running Parse would read the document the fast way a second time).
	exact := func() (*evaluator.Snapshot, string, error) {
		doc, err := parseExactly(data)
		if err != nil {
			return nil, "", err
		}
		snap, err := doc.Compile(version)
		if err != nil {
			return nil, "", err
		}
		return snap, doc.Hash(), nil
	}
	doc, _, pre, ok := parseFast(data, false)
	if !ok {
		return exact()
	}
	snap, ps := evaluator.NewSnapshot(version, pre.specs, evaluator.SnapshotOptions{Compiled: pre.compiled})
	if len(ps) > 0 {
		return exact() // an invalid document: Parse words the problems
	}
	return snap, doc.hashOfLeaves(pre.pieces, len(doc.keys)), nil
}

// precompiled is what Parse's fast path compiled while reading: the specs
// (key and prerequisites only) and compiled flags NewSnapshot links, and
// for ParseCompiled each worker's hash leaves (appendLeaf), in key order.
type precompiled struct {
	specs    []evaluator.FlagSpec
	compiled []evaluator.CompiledFlag
	pieces   [][]byte
}

// fastWorker is what one parsing goroutine reuses from flag to flag.
type fastWorker struct {
	buf    []byte
	intern internTable
}

// rawFlag is one member of the flags object, not yet parsed.
type rawFlag struct {
	key string
	def []byte
}

// indexOf is s's index in list, or 64 (a shift that gives 0) if absent.
func indexOf(list []string, s string) int {
	if i := slices.Index(list, s); i >= 0 {
		return i
	}
	return 64
}

// fastFlag parses one flag definition the way parser.flag does, for the
// fields and values it handles; nil means "use parser.flag" (an unusual
// field, a wrong type, anything parser.flag would report). It decodes the
// definition's members straight into the flag: no map of fields, and a
// repeated field is a bit already set.
func fastFlag(key string, def []byte, w *fastWorker) *FlagDoc {
	if !validFlagKey(key) {
		return nil
	}
	f := &FlagDoc{}
	str := func(v any, dst *string) bool {
		s, ok := v.(string)
		*dst = s
		return ok
	}
	var seen uint
	r := jsonReader{data: def, intern: &w.intern}
	err := r.members(func(field string, r *jsonReader) error {
		bit := uint(1) << indexOf(flagFields, field)
		if bit == 0 || seen&bit != 0 {
			return errSlowPath
		}
		seen |= bit
		v, err := r.value()
		if err != nil {
			return err
		}
		ok := true
		switch field {
		case "state":
			ok = str(v, &f.State) && (f.State == "ENABLED" || f.State == "DISABLED")
		case "variants":
			vs, _ := v.(map[string]any)
			ok = len(vs) > 0
			for _, val := range vs {
				ok = ok && val != nil
			}
			f.decoded.variants = vs
		case "defaultVariant":
			if v != nil {
				var s string
				ok = str(v, &s)
				f.DefaultVariant = &s
			}
		case "targeting":
			switch t := v.(type) {
			case nil:
			case map[string]any:
				f.decoded.targeting = t
			default:
				ok = false
			}
		case "metadata":
			md, _ := v.(map[string]any)
			ok = md != nil
			for _, val := range md {
				switch val.(type) {
				case string, bool, json.Number:
				default:
					ok = false
				}
			}
			f.Metadata = md
		case "owner":
			ok = str(v, &f.Owner)
		case "description":
			ok = str(v, &f.Description)
		case "expires":
			ok = str(v, &f.Expires)
			if _, err := parseExpires(f.Expires); ok && f.Expires != "" && err != nil {
				ok = false
			}
		case "prerequisites":
			pm, _ := v.(map[string]any)
			ok = pm != nil
			f.Prerequisites = make(map[string]string, len(pm))
			for k, want := range pm {
				s, isStr := want.(string)
				ok = ok && isStr
				f.Prerequisites[k] = s
			}
		case "propagation":
			ok = str(v, &f.Propagation) && validPropagation(f.Propagation)
		case "failMode":
			ok = str(v, &f.FailMode) && validFailMode(f.FailMode)
		case "safeVariant":
			ok = str(v, &f.SafeVariant)
		default: // systems, retirement, experiment, fallbackTargeting, targetingBudget
			ok = false
		}
		if !ok {
			return errSlowPath
		}
		return nil
	})
	if err != nil || r.end() != nil {
		return nil
	}
	if f.State == "" || f.decoded.variants == nil || f.FailMode == FailModeClosed && f.SafeVariant == "" {
		return nil
	}
	if !f.encodeCanonical(&w.buf) {
		return nil
	}
	return f
}

// encodeCanonical sets f.canon to the bytes canonicalJSON(f) gives, for a
// flag fastFlag built, and points Variants and Targeting into it (they are
// the same bytes; holding them once saves a copy of every rule). scratch is
// the worker's reusable buffer.
func (f *FlagDoc) encodeCanonical(scratch *[]byte) bool {
	b := append((*scratch)[:0], `{"state":`...)
	b = appendJSONString(b, f.State)
	b = append(b, `,"variants":{`...)
	names := keysOf(f.decoded.variants)
	spans := make([][2]int, len(names))
	ok := true
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, n)
		b = append(b, ':')
		spans[i][0] = len(b)
		if b, ok = appendCanonical(b, f.decoded.variants[n]); !ok {
			return false
		}
		spans[i][1] = len(b)
	}
	b = append(b, `},"defaultVariant":`...)
	if f.DefaultVariant == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *f.DefaultVariant)
	}
	var target [2]int
	if f.decoded.targeting != nil {
		b = append(b, `,"targeting":`...)
		target[0] = len(b)
		if b, ok = appendCanonical(b, f.decoded.targeting); !ok {
			return false
		}
		target[1] = len(b)
	}
	if len(f.Metadata) > 0 {
		b = append(b, `,"metadata":`...)
		if b, ok = appendCanonical(b, f.Metadata); !ok {
			return false
		}
	}
	b = appendStringField(b, "owner", f.Owner)
	b = appendStringField(b, "description", f.Description)
	b = appendStringField(b, "expires", f.Expires)
	if len(f.Prerequisites) > 0 {
		b = append(b, `,"prerequisites":{`...)
		for i, k := range keysOf(f.Prerequisites) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, f.Prerequisites[k])
		}
		b = append(b, '}')
	}
	b = appendStringField(b, "propagation", f.Propagation)
	b = appendStringField(b, "failMode", f.FailMode)
	b = appendStringField(b, "safeVariant", f.SafeVariant)
	b = append(b, '}')
	*scratch = b
	f.canon = bytes.Clone(b)
	f.Variants = make(map[string]json.RawMessage, len(names))
	for i, n := range names {
		f.Variants[n] = f.canon[spans[i][0]:spans[i][1]:spans[i][1]]
	}
	if target[1] > 0 {
		f.Targeting = f.canon[target[0]:target[1]:target[1]]
	}
	return true
}

// appendStringField appends `,"name":"value"` unless value is empty
// (encoding/json's omitempty).
func appendStringField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, value)
}
