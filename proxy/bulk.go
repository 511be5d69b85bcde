package proxy

import (
	"bytes"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
)

// bulkPlan is a snapshot's bulk answer taken apart once: every flag whose
// answer cannot depend on the request (no context reads, no clock, no
// error) is encoded ahead of time, and runs of such flags are stored as
// one byte slice. A bulk request then appends a handful of slices and
// evaluates only the flags that read the context. At 1,000 flags with
// 60 % static ones this turns 1,000 evaluations, map lookups and metric
// lookups into ~400 evaluations and ~400 memmoves.
//
// Evaluations of precomputed flags are still counted, per answer: served
// counts the answers built from this plan, and flush adds it to each
// precomputed flag's counter when metrics are read (see
// metrics.flushBulk), so the hot path does one atomic add instead of one
// per static flag.
type bulkPlan struct {
	snap *evaluator.Snapshot
	id   uint64 // unique per plan (cache keys)
	// segs: static bytes, then the dynamic flag that follows them. The last
	// segment has no flag.
	segs []bulkSeg
	// lists are the dynamic flags' outcome lists (segs[i].ctrs is
	// &lists[i]); outMu serialises adding outcomes, and tails holds every
	// outcome's encoded tail once (appendCounted).
	lists []flagCounters
	outMu sync.Mutex
	tails map[string]string
	tail  []byte // `],"metadata":{"version":"N"},"eventStreams":[...]}`

	// cacheKeyReads is the union of the context paths the dynamic flags
	// read, sorted; cacheable is false when some flag cannot be keyed (it
	// reads the clock or computes var paths), and then whole answers are
	// never cached.
	cacheKeyReads []string
	cacheable     bool

	// experiments are the flag set's experiment flags: every bulk answer
	// is an exposure to each of them (experiment.go).
	experiments []*evaluator.Flag

	static  []prometheus.Counter // one per precomputed flag
	served  atomic.Uint64        // answers not yet added to static
	retired atomic.Int64         // unix nanos when a newer plan replaced it
	// size is the length of the last answer: the next one is built in a
	// buffer of about that size, instead of doubling its way up (at
	// 100,000 flags, 9 MB answers that left another 9 MB of garbage each).
	size atomic.Int64
	// minSize is the length of the answer's fixed parts, a lower bound of
	// every answer's: it tells a plan's first answer is big before one
	// was built.
	minSize int64
}

type bulkSeg struct {
	// static ends with the head of flag's answer (appendResultHead), so
	// only its tail is appended per request.
	static []byte
	flag   *evaluator.Flag // nil in the last segment
	ctrs   *flagCounters
}

// flagCounters remembers a dynamic flag's outcomes: a flag has a handful
// (variant, reason, metadata) of them, each with its evaluations counter
// and the tail of its encoded answer, kept in a small copy-on-write list.
// A bulk request then neither hashes label strings nor re-encodes an
// answer it has produced before.
//
// At 100,000 flags a bulk answer gives ~40,000 dynamic flags two or three
// outcomes each, so this is sized with care: the lists of a plan are one
// slice (bulkPlan.lists), a list is exactly as long as its outcomes, and
// tails equal across flags (the same variant, value, reason and metadata
// — most of them) are stored once per plan (bulkPlan.tails).
type flagCounters struct {
	list atomic.Pointer[[]outcome]
}

type outcome struct {
	variant string
	reason  evaluator.Reason
	meta    *byte // identity of Result.MetadataJSON (snapshot-owned, immutable)
	metaLen int
	c       prometheus.Counter
	tail    string // appendResultTail of the outcome, shared (bulkPlan.tails)
}

// maxOutcomes bounds the list; a flag with more outcomes is counted and
// encoded the slow way.
const maxOutcomes = 16

// appendCounted counts r (a result of this flag without an error code),
// appends the tail of its encoding to dst and returns its counter.
func (p *bulkPlan) appendCounted(dst []byte, fc *flagCounters, m *metrics, r *evaluator.Result) ([]byte, prometheus.Counter) {
	meta, metaLen := unsafeMeta(r)
	if o := fc.find(r, meta, metaLen); o != nil {
		o.c.Inc()
		return append(dst, o.tail...), o.c
	}
	c := m.counter(counterKey{flag: r.Key, variant: r.Variant, reason: r.Reason})
	c.Inc()
	start := len(dst)
	dst = appendResultTail(dst, r)
	p.outMu.Lock()
	defer p.outMu.Unlock()
	var cur []outcome
	if l := fc.list.Load(); l != nil {
		cur = *l
	}
	if len(cur) >= maxOutcomes || fc.find(r, meta, metaLen) != nil {
		return dst, c // full, or another request added it meanwhile
	}
	tail, ok := p.tails[string(dst[start:])] // no allocation for the lookup
	if !ok {
		tail = string(dst[start:])
		if p.tails == nil {
			p.tails = map[string]string{}
		}
		p.tails[tail] = tail
	}
	next := make([]outcome, len(cur)+1)
	copy(next, cur)
	next[len(cur)] = outcome{variant: r.Variant, reason: r.Reason, meta: meta, metaLen: metaLen, c: c, tail: tail}
	fc.list.Store(&next)
	return dst, c
}

// unsafeMeta is the identity of r's metadata (find's meta, metaLen).
func unsafeMeta(r *evaluator.Result) (*byte, int) {
	return unsafe.SliceData(r.MetadataJSON), len(r.MetadataJSON)
}

// find returns the outcome of r, nil when the list does not have it yet.
func (fc *flagCounters) find(r *evaluator.Result, meta *byte, metaLen int) *outcome {
	if l := fc.list.Load(); l != nil {
		for i := range *l {
			o := &(*l)[i]
			if o.variant == r.Variant && o.reason == r.Reason && o.meta == meta && o.metaLen == metaLen {
				return o
			}
		}
	}
	return nil
}

// bulkPlanFor returns the plan for snap, building it on first use. One
// request builds it while the others asking for the same snapshot wait:
// at 100,000 flags a build takes a second and tens of megabytes, and every
// connection's first bulk request used to build its own copy.
func (s *Server) bulkPlanFor(snap *evaluator.Snapshot) *bulkPlan {
	if p := s.plan.Load(); p != nil && p.snap == snap {
		return p
	}
	s.planMu.Lock()
	defer s.planMu.Unlock()
	old := s.plan.Load()
	if old != nil && old.snap == snap {
		return old // built while this request waited
	}
	p := newBulkPlan(snap, s.m)
	s.plan.Store(p)
	if old != nil {
		s.m.retirePlan(old)
	}
	s.m.addPlan(p)
	return p
}

// newBulkPlan encodes snap's request-independent answers.
func newBulkPlan(snap *evaluator.Snapshot, m *metrics) *bulkPlan {
	p := &bulkPlan{snap: snap, id: planIDs.Add(1), cacheable: true}
	reads := map[string]bool{}
	var cur []byte
	empty := evaluator.NewContext()
	for i, key := range snap.Keys() {
		if i > 0 {
			cur = append(cur, ',')
		}
		f := snap.Flag(key)
		if f.ExperimentMetrics() != nil {
			p.experiments = append(p.experiments, f)
		}
		if !f.NeedsContext() && !f.ReadsTime() {
			r := snap.EvaluateFlag(f, empty)
			if r.ErrorCode == evaluator.CodeNone {
				cur = appendResult(cur, &r)
				p.static = append(p.static, m.counter(counterKey{flag: r.Key, variant: r.Variant, reason: r.Reason}))
				continue
			}
		}
		cur = appendResultHead(cur, f.Key())
		p.segs = append(p.segs, bulkSeg{static: cur, flag: f})
		cur = nil
		if _, ok := f.AppendCacheKey(nil, empty); !ok {
			p.cacheable = false
		}
		for _, r := range f.Reads() {
			reads[r] = true
		}
	}
	p.segs = append(p.segs, bulkSeg{static: cur})
	p.lists = make([]flagCounters, len(p.segs)-1)
	for i := range p.lists {
		p.segs[i].ctrs = &p.lists[i]
	}
	for r := range reads {
		p.cacheKeyReads = append(p.cacheKeyReads, r)
	}
	sort.Strings(p.cacheKeyReads)
	p.tail = append(p.tail, `],"metadata":{"version":`...)
	p.tail = appendString(p.tail, strconv.FormatUint(snap.Version(), 10))
	p.tail = append(p.tail, `},"eventStreams":[{"type":"sse","endpoint":{"requestUri":"/v1/stream"},"inactivityDelaySec":120}]}`...)
	p.minSize = int64(len(bulkHead) + len(p.tail))
	for i := range p.segs {
		p.minSize += int64(len(p.segs[i].static))
	}
	return p
}

// appendAnswer appends the whole bulk answer for ec and returns the
// counters of the dynamic flags' outcomes (appended to ctrs, for a cache
// entry) — every evaluation is counted here as it is made.
func (p *bulkPlan) appendAnswer(dst []byte, ec *evaluator.Context, m *metrics, ctrs []prometheus.Counter) ([]byte, []prometheus.Counter, bool) {
	start := len(dst)
	if want := int(p.size.Load()); cap(dst)-start < want {
		dst = slices.Grow(dst, want+want/16) // answers vary a little with the context
	}
	dst = append(dst, bulkHead...)
	clean := true // no error answers: safe to cache
	for i := range p.segs {
		sg := &p.segs[i]
		dst = append(dst, sg.static...)
		if sg.flag == nil {
			break
		}
		var c prometheus.Counter
		if dst, c = p.appendDynamic(dst, sg, ec, m); c == nil {
			clean = false
		} else if ctrs != nil {
			ctrs = append(ctrs, c)
		}
	}
	p.served.Add(1)
	dst = append(dst, p.tail...)
	p.size.Store(int64(len(dst) - start))
	return dst, ctrs, clean
}

// bulkHead opens every bulk answer.
const bulkHead = `{"flags":[`

// appendDynamic evaluates sg's flag for ec, counts it and appends the tail
// of its answer; c is its outcome's counter, nil for an error answer
// (counted too, but not by a counter a cache entry may replay).
func (p *bulkPlan) appendDynamic(dst []byte, sg *bulkSeg, ec *evaluator.Context, m *metrics) (_ []byte, c prometheus.Counter) {
	r := m.deg.evaluateFlag(p.snap, sg.flag, ec) // full rule, or fallback under pressure (degrade.go)
	return p.appendEvaluated(dst, sg, m, &r)
}

// appendEvaluated is appendDynamic for a result already evaluated.
func (p *bulkPlan) appendEvaluated(dst []byte, sg *bulkSeg, m *metrics, r *evaluator.Result) (_ []byte, c prometheus.Counter) {
	if r.ErrorCode != evaluator.CodeNone {
		m.countEval(true, r)
		return appendResultTail(dst, r), nil // error details can differ per context
	}
	return p.appendCounted(dst, sg.ctrs, m, r)
}

// appendCacheKey appends the plan's id and the values of every path the
// plan's dynamic flags read: two contexts with equal keys get equal bulk
// answers (the same argument as evaluator.Flag.AppendCacheKey, over the
// union of the flags' reads). The id, not the version, names the
// snapshot: a sidecar can replace a snapshot by another of the same
// version (a rejected or rewound flag set), and no answer of the old one
// may be served for the new.
func (p *bulkPlan) appendCacheKey(dst []byte, ec *evaluator.Context) []byte {
	dst = append(dst, 0, 'B', 0) // no flag key starts with NUL: never a single-flag key
	dst = strconv.AppendUint(dst, p.id, 10)
	dst = append(dst, 0)
	return ec.AppendValues(dst, p.cacheKeyReads)
}

// planIDs numbers plans for cache keys.
var planIDs atomic.Uint64

// flush adds the answers served since the last flush to the precomputed
// flags' counters.
func (p *bulkPlan) flush() {
	n := p.served.Swap(0)
	if n == 0 {
		return
	}
	for _, c := range p.static {
		c.Add(float64(n))
	}
}

// planRetention is how long a replaced plan keeps being flushed: requests
// that loaded it before the swap finish well within it.
const planRetention = time.Minute

// cacheEntry is one response-cache value: the encoded answer and the
// evaluation counters it stands for, so a hit is counted in
// pennon_evaluations_total exactly like the evaluations it replaces.
type cacheEntry struct {
	body []byte
	ctrs []prometheus.Counter
	plan *bulkPlan // bulk answers: its precomputed flags are counted per hit
}

func (e *cacheEntry) count() {
	for _, c := range e.ctrs {
		c.Inc()
	}
	if e.plan != nil {
		e.plan.served.Add(1)
	}
}

// setAnswer makes answer the response body without copying it and returns
// a buffer for the caller's next use. An answer up to maxPooledBuffer is
// swapped in (the response's previous buffer comes back, to be reused); a
// bigger one (a big answer on its way into a large cache: the others are
// streamed, bulk_stream.go) is given to the response as a body stream, so
// the connection does not keep its buffer between requests.
func (s *Server) setAnswer(ctx *fasthttp.RequestCtx, answer []byte) []byte {
	if cap(answer) > maxPooledBuffer {
		ctx.Response.SetBodyStream(bytes.NewReader(answer), len(answer))
		return nil
	}
	return ctx.Response.SwapBody(answer)[:0]
}

// answerBulk writes the bulk answer for ec from plan into ctx, through
// the response cache when the plan can be keyed. buf is scratch space; a
// freshly built answer is swapped into the response (SwapBody) rather
// than copied, and the response's previous buffer is returned for the
// pool. An answer over maxPooledBuffer that is not cached is streamed
// (streamAnswer).
func (s *Server) answerBulk(ctx *fasthttp.RequestCtx, buf []byte, plan *bulkPlan, ec *evaluator.Context) []byte {
	// While any flag serves its fallback, answers are looked up but not
	// cached: a fallback answer must never be served later under the full
	// rule's key (degrade.go, calm).
	epoch, calm := s.deg.calm(plan.snap)
	size := max(plan.size.Load(), plan.minSize)
	if s.cache == nil || !plan.cacheable || s.o.NoBulkCache || size > s.o.CacheBytes/maxBulkEntryShare {
		if size > maxPooledBuffer {
			s.streamAnswer(ctx, plan, ec)
			return buf
		}
		buf, _, _ = plan.appendAnswer(buf, ec, s.m, nil)
		return s.setAnswer(ctx, buf)
	}
	buf = plan.appendCacheKey(buf, ec)
	if e, hit := s.cache.Get(buf); hit {
		s.m.cacheHit.Inc()
		s.bulkAdmit.observe(true)
		e.count()
		ctx.Response.SetBodyRaw(e.body) // immutable once cached
		return buf
	}
	s.m.cacheMiss.Inc()
	s.bulkAdmit.observe(false)
	if !s.seenBefore(buf) || !s.bulkAdmit.admit() {
		// A context seen for the first time is answered, not cached: most
		// one-off contexts never come back, and copying an ~80 KB answer
		// that is never reused costs more than the cache saves.
		body, _, _ := plan.appendAnswer(buf[len(buf):], ec, s.m, nil)
		return s.setAnswer(ctx, body)
	}
	key := append([]byte(nil), buf...)
	body, ctrs, clean := plan.appendAnswer(buf[len(buf):], ec, s.m, make([]prometheus.Counter, 0, len(plan.segs)))
	if !clean || !calm || !s.deg.stillCalm(epoch) {
		return s.setAnswer(ctx, body)
	}
	e := &cacheEntry{body: append([]byte(nil), body...), ctrs: ctrs, plan: plan}
	s.cache.Set(key, e, int64(len(e.body)+len(key)+8*len(ctrs)+64))
	ctx.Response.SetBodyRaw(e.body)
	return body
}

// maxBulkEntryShare: a bulk answer larger than 1/16 of the cache is not
// cached. At 100,000 flags an answer is 9 MB: one would take half the
// default cache and evict everything else, and copying it in costs more
// than evaluating it again saves (the first answer of a plan, with no
// size yet, is never cached either: the doorkeeper lets no first miss in).
const maxBulkEntryShare = 16

// doorkeeperSlots is the size of the recently-missed table: enough to
// remember the distinct contexts of a few seconds of bulk traffic.
const doorkeeperSlots = 1 << 14

// doorkeeper remembers hashes of bulk cache keys that missed once, so
// only a context asked for a second time is cached. It is lossy (a slot
// is overwritten by a later key) and lock-free; a lost entry only delays
// caching by one more miss.
type doorkeeper [doorkeeperSlots]atomic.Uint64

// seenBefore reports whether key missed before, and remembers it.
func (s *Server) seenBefore(key []byte) bool {
	h := xxhash.Sum64(key) | 1 // never 0: 0 is an empty slot
	slot := &s.door[h%doorkeeperSlots]
	if slot.Load() == h {
		return true
	}
	slot.Store(h)
	return false
}

// bulkAdmitWindow is how many bulk cache lookups one hit-rate sample spans.
const bulkAdmitWindow = 1024

// bulkAdmission throttles caching of bulk answers when it does not pay.
// Bulk answers are large (~90 KB at 1,000 flags): when the distinct
// contexts in play outnumber what the cache holds (e.g. 1,000 users
// asking uniformly, 16 MiB holding ~180 answers), nearly every cached
// answer is evicted before it is reused, and copying it in, evicting and
// collecting it costs more than the few hits save (bench/README.md,
// "Response cache"). So after a window of lookups with fewer than 1 in 4
// hits, only 1 in 8 eligible answers is cached — enough to notice when
// traffic turns repetitive again, and the hit rate of a cache that is not
// churned stays what its capacity allows.
type bulkAdmission struct {
	lookups, hits, sampled atomic.Uint64
	throttled              atomic.Bool
}

func (a *bulkAdmission) observe(hit bool) {
	if hit {
		a.hits.Add(1)
	}
	if a.lookups.Add(1)%bulkAdmitWindow == 0 {
		a.throttled.Store(a.hits.Swap(0)*4 < bulkAdmitWindow)
	}
}

func (a *bulkAdmission) admit() bool {
	return !a.throttled.Load() || a.sampled.Add(1)%8 == 0
}
