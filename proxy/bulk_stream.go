package proxy

import (
	"io"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
)

// streamChunk is about the size of the pieces a streamed bulk answer is
// written in (one write to the connection each).
const streamChunk = 64 << 10

// bulkStream is a big bulk answer (over maxPooledBuffer: 100,000 flags
// make 9 MB) that is never built whole. The handler evaluates every flag
// that reads the context and keeps only the tail of each answer — nearly
// always an outcome's tail the plan already holds (appendCounted), so 16
// bytes per flag — which also gives the answer's exact length. fasthttp
// then writes it with that Content-Length, gathering the tails and short
// static runs into chunks of about streamChunk and sending the plan's
// long static runs as they are. Built whole, every request in flight held
// its own answer: with 8 concurrent bulk requests at 100,000 flags the
// sidecar held 375-415 MB, streamed 259-264 MB (bench/README.md, "Scale").
//
// The bytes are exactly appendAnswer's (TestBulkStreamMatchesBuffered).
// Everything is evaluated and counted before the handler returns, so the
// context, the latency and the in-flight count are the handler's as for
// any answer; the stream holds only the plan (immutable) and the tails.
type bulkStream struct {
	plan  *bulkPlan
	tails []string // per dynamic flag, in plan order

	seg        int  // next segment of plan
	staticSent bool // segs[seg].static is out, its flag's tail is next
	headSent   bool
	done       bool // the tail of the answer is out
	scratch    []byte
	pending    []byte // for Read: the rest of the last piece
}

// streamAnswer evaluates the bulk answer for ec and sets it as ctx's body
// stream.
func (s *Server) streamAnswer(ctx *fasthttp.RequestCtx, plan *bulkPlan, ec *evaluator.Context) {
	tails := make([]string, len(plan.segs)-1)
	n := plan.minSize
	for i := range tails {
		tails[i] = plan.tailOf(&plan.segs[i], ec, s.m)
		n += int64(len(tails[i]))
	}
	plan.served.Add(1)
	plan.size.Store(n)
	ctx.Response.SetBodyStream(&bulkStream{plan: plan, tails: tails}, int(n))
}

// tailOf is appendDynamic returning the tail as a string: an outcome seen
// before costs no bytes, only the string header.
func (p *bulkPlan) tailOf(sg *bulkSeg, ec *evaluator.Context, m *metrics) string {
	r := m.deg.evaluateFlag(p.snap, sg.flag, ec) // full rule, or fallback under pressure (degrade.go)
	if r.ErrorCode == evaluator.CodeNone {
		meta, metaLen := unsafeMeta(&r)
		if o := sg.ctrs.find(&r, meta, metaLen); o != nil {
			o.c.Inc()
			return o.tail
		}
	}
	b, _ := p.appendEvaluated(nil, sg, m, &r) // an error, a first outcome (or past maxOutcomes)
	return string(b)
}

// WriteTo writes the rest of the answer, a piece at a time; fasthttp's
// writer for a body of known length uses it.
func (b *bulkStream) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(b.pending) > 0 {
		m, err := w.Write(b.pending)
		n += int64(m)
		b.pending = b.pending[m:]
		if err != nil {
			return n, err
		}
	}
	for {
		piece, ok := b.next()
		if !ok {
			return n, nil
		}
		m, err := w.Write(piece)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

func (b *bulkStream) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		piece, ok := b.next()
		if !ok {
			return 0, io.EOF
		}
		b.pending = piece
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

// next returns the next piece of the answer (valid until the next call),
// false once all of it was returned: a static run of streamChunk or more
// as the plan holds it, everything else gathered in scratch up to about
// streamChunk.
func (b *bulkStream) next() ([]byte, bool) {
	if b.done {
		return nil, false
	}
	p := b.plan
	buf := b.scratch[:0]
	if !b.headSent {
		buf = append(buf, bulkHead...)
		b.headSent = true
	}
	for len(buf) < streamChunk {
		if b.seg == len(p.segs) {
			buf = append(buf, p.tail...)
			b.done = true
			break
		}
		sg := &p.segs[b.seg]
		if !b.staticSent {
			if len(sg.static) >= streamChunk {
				if len(buf) > 0 {
					break // what is gathered goes first
				}
				b.staticSent = true
				return sg.static, true // the plan's bytes: immutable
			}
			buf = append(buf, sg.static...)
			b.staticSent = true
		}
		if sg.flag == nil {
			b.seg = len(p.segs) // the last segment: the answer's tail is next
			continue
		}
		buf = append(buf, b.tails[b.seg]...)
		b.seg++
		b.staticSent = false
	}
	b.scratch = buf
	return buf, true
}
