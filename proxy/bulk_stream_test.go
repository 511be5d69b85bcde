package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/checkfor"
)

// streamFlags is a flag set whose bulk answer is streamed and has every
// kind of piece: static runs longer than a chunk (the plan's bytes, sent
// as they are), short static runs gathered with dynamic flags, dynamic
// flags whose answer depends on the context, and an error answer.
func streamFlags() string {
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range 20000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		switch {
		case i == 19999:
			fmt.Fprintf(&sb, `"f-%05d":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","targeting":{"if":[{"==":[{"var":"plan"},"premium"]},"nope","a"]}}`, i)
		case i%5000 < 3500: // 3,500 static flags in a row: ~270 KB
			fmt.Fprintf(&sb, `"f-%05d":{"state":"ENABLED","variants":{"a":"alpha","b":"beta"},"defaultVariant":"a"}`, i)
		case i%7 == 0:
			fmt.Fprintf(&sb, `"f-%05d":{"state":"ENABLED","variants":{"a":"alpha"},"defaultVariant":"a"}`, i)
		default:
			fmt.Fprintf(&sb, `"f-%05d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"plan"},"premium"]},"on","off"]}}`, i)
		}
	}
	sb.WriteString(`}}`)
	return sb.String()
}

// rawPost sends one POST over a new connection in the given protocol and
// returns the response's head and body as sent (chunked bodies undone);
// X-Transfer-Encoding in the head is the response's transfer coding.
func rawPost(t *testing.T, addr, proto, path, body string) (http.Header, string) {
	t.Helper()
	h, b, err := postRaw(addr, proto, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return h, b
}

// postRaw is rawPost for any goroutine.
func postRaw(addr, proto, path, body string) (http.Header, string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	fmt.Fprintf(c, "POST %s %s\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, proto, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, "", fmt.Errorf("%s: %d %v", proto, resp.StatusCode, err)
	}
	h := resp.Header.Clone()
	h.Set("X-Transfer-Encoding", strings.Join(resp.TransferEncoding, ","))
	return h, string(b), nil
}

// bulkAnswerOf is appendAnswer's answer for body's context: the answer
// built whole.
func bulkAnswerOf(t *testing.T, s *Server, body string) string {
	t.Helper()
	b, _, _ := s.bulkPlanFor(s.src.Current()).appendAnswer(nil, contextOf(t, body), s.m, nil)
	return string(b)
}

// contextOf decodes a request body's "context".
func contextOf(t *testing.T, body string) *evaluator.Context {
	t.Helper()
	ec := evaluator.NewContext()
	if err := ec.DecodeField([]byte(body), "context", evaluator.Limits{}); err != nil {
		t.Fatal(err)
	}
	return ec
}

// TestBulkStreamMatchesBuffered: an answer over maxPooledBuffer is
// streamed, not built: with its exact Content-Length (not chunked, so
// HTTP/1.0 clients get it too), byte for byte the answer built whole —
// the plan's first answer included — and every evaluation counted.
func TestBulkStreamMatchesBuffered(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, streamFlags(), 1))
	s := startServer(t, &h, func(o *Options) { o.CacheBytes = -1; o.MaxFlagSeries = 100000 })
	const path = "/ofrep/v1/evaluate/flags"
	for _, ctx := range []string{`{"context":{"plan":"premium"}}`, `{"context":{"plan":"basic"}}`} {
		var etag string
		for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
			head, got := rawPost(t, s.Addr(), proto, path, ctx)
			if head.Get("X-Transfer-Encoding") != "" || head.Get("Content-Length") != fmt.Sprint(len(got)) {
				t.Fatalf("%s: transfer coding %q, length %q for %d bytes", proto, head.Get("X-Transfer-Encoding"), head.Get("Content-Length"), len(got))
			}
			if want := bulkAnswerOf(t, s, ctx); len(got) <= maxPooledBuffer || got != want {
				t.Fatalf("%s: streamed %d bytes, built %d; equal %v", proto, len(got), len(want), got == want)
			}
			if etag == "" {
				etag = head.Get("ETag")
			} else if head.Get("ETag") != etag {
				t.Fatalf("ETag %q, then %q", etag, head.Get("ETag"))
			}
			premium := strings.Contains(ctx, "premium")
			want := `{"key":"f-03501","reason":"TARGETING_MATCH","variant":"off","value":false,"metadata":{}}`
			if premium {
				want = `{"key":"f-03501","reason":"TARGETING_MATCH","variant":"on","value":true,"metadata":{}}`
			}
			if !strings.Contains(got, want) || !strings.Contains(got, `{"key":"f-00001","reason":"STATIC","variant":"a","value":"alpha","metadata":{}}`) {
				t.Fatalf("answer for %s lacks %s", ctx, want)
			}
			if premium != strings.Contains(got, `{"key":"f-19999","errorCode":"GENERAL"`) {
				t.Fatalf("the error answer of f-19999 for %s: %s", ctx, got[len(got)-400:])
			}
		}
	}
	_, _, metrics := do(t, "GET", "http://"+s.Addr()+"/metrics", "", "")
	for _, want := range []string{
		// 4 answers streamed, 4 built by bulkAnswerOf
		`pennon_evaluations_total{flag="f-00001",reason="STATIC",variant="a"} 8`,
		`pennon_evaluations_total{flag="f-03501",reason="TARGETING_MATCH",variant="on"} 4`,
		`pennon_evaluations_total{flag="f-03501",reason="TARGETING_MATCH",variant="off"} 4`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	// In the handler: the body is the stream, nothing was built whole.
	var rc fasthttp.RequestCtx
	request(&rc, "POST", path, []byte(`{"context":{"plan":"premium"}}`))
	s.Handler()(&rc)
	if st, ok := rc.Response.BodyStream().(*bulkStream); !ok || st.done || rc.Response.Header.ContentLength() != len(bulkAnswerOf(t, s, `{"context":{"plan":"premium"}}`)) {
		t.Fatalf("the handler's body stream is %T (length %d), want an unread *bulkStream of the answer's length", rc.Response.BodyStream(), rc.Response.Header.ContentLength())
	}
	rc.Response.Reset()
}

// TestBulkStreamClientGone: clients that read part of a streamed answer
// and hang up leave nothing behind — no request stays in flight for
// overload detection — and the next answers are whole.
func TestBulkStreamClientGone(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, streamFlags(), 1))
	s := startServer(t, &h, func(o *Options) { o.CacheBytes = -1 })
	const path = "/ofrep/v1/evaluate/flags"
	_, want := rawPost(t, s.Addr(), "HTTP/1.1", path, `{"context":{"plan":"premium"}}`)
	for range 3 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		body := `{"context":{"plan":"premium"}}`
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
		if _, err := io.ReadFull(c, make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := s.deg.inFlight.Load(); n != 0 {
			return fmt.Errorf("%d requests still in flight after their clients left", n)
		}
		return nil
	})
	if _, got := rawPost(t, s.Addr(), "HTTP/1.1", path, `{"context":{"plan":"premium"}}`); got != want {
		t.Fatalf("after abandoned streams: %d bytes, want %d", len(got), len(want))
	}
}

// TestBulkStreamRead: read through Read (as a body copy does) instead of
// WriteTo, the stream gives the same bytes, in reads of any size.
func TestBulkStreamRead(t *testing.T) {
	s := newTestServer(t, streamFlags())
	plan := s.bulkPlanFor(s.src.Current())
	const body = `{"context":{"plan":"premium"}}`
	want := bulkAnswerOf(t, s, body)
	ec := contextOf(t, body)
	tails := make([]string, len(plan.segs)-1)
	for i := range tails {
		tails[i] = plan.tailOf(&plan.segs[i], ec, s.m)
	}
	for _, size := range []int{1, 7, 4096, 1 << 20} {
		b := &bulkStream{plan: plan, tails: tails}
		var got []byte
		buf := make([]byte, size)
		for {
			n, err := b.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(got) != want {
			t.Fatalf("reads of %d: %d bytes, want %d", size, len(got), len(want))
		}
	}
}
