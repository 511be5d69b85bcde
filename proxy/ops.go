package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/pennon-dev/pennon/evaluator"
)

// bulkETag identifies a bulk answer: it changes when the flag set changes
// AND when the request body (the context) differs, so a client can never get
// a 304 for answers computed for another context. (Keying only on the flag
// set version is a known bug elsewhere: a client switching users would keep
// the previous user's flags.)
func bulkETag(snap *evaluator.Snapshot, body []byte) string {
	h := sha256.New()
	var v [16]byte
	n := snap.Version()
	// The snapshot's ID too: a flag set rewound to the control plane's
	// truth can come back under the same version, and a client holding the
	// old ETag must not get a 304 for it.
	id := snap.ID()
	for i := 0; i < 8; i++ {
		v[i], v[8+i] = byte(n>>(8*i)), byte(id>>(8*i))
	}
	h.Write(v[:])
	h.Write(bytes.TrimSpace(body))
	sum := h.Sum(nil)
	return `"` + strconv.FormatUint(n, 10) + "-" + hex.EncodeToString(sum[:12]) + `"`
}

func (s *Server) metricsHandler(ctx *fasthttp.RequestCtx) {
	fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))(ctx)
}

// Status is the /v1/status document.
type Status struct {
	Ready      bool       `json:"ready"`
	Version    uint64     `json:"version"`
	Flags      int        `json:"flags"`
	Source     string     `json:"source"`
	LastChange *time.Time `json:"lastChange,omitempty"`
	Uptime     string     `json:"uptime"`
	Cache      CacheStats `json:"cache"`
	Sync       any        `json:"sync,omitempty"`
	// Targeting is graceful degradation: overload, and the flags served
	// by their fallbackTargeting with their measured cost (degrade.go).
	Targeting *TargetingStatus `json:"targeting"`
}

func (s *Server) statusHandler(ctx *fasthttp.RequestCtx) {
	snap := s.src.Current()
	st := Status{Source: s.o.SourceName, Uptime: time.Since(s.started).Round(time.Second).String(), Cache: s.cacheStats()}
	if snap != nil {
		st.Ready, st.Version, st.Flags = true, snap.Version(), snap.Len()
		s.noteVersion(snap.Version())
		if ns := s.lastChange.Load(); ns > 0 {
			t := time.Unix(0, ns).UTC()
			st.LastChange = &t
		}
	}
	st.Targeting = s.deg.status(snap)
	if s.status != nil {
		st.Sync = s.status.Status()
		if st.Ready {
			st.Ready, _ = s.status.Ready()
		}
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	ctx.SetContentType(contentType)
	ctx.SetBody(b)
}

// noteVersion records when the served version last changed.
func (s *Server) noteVersion(v uint64) {
	if old := s.lastVersion.Swap(v); old != v {
		s.lastChange.Store(time.Now().UnixNano())
	}
}

// stream is the OFREP change stream: one SSE event per new snapshot, with
// the version as etag, and a comment every KeepAlive so idle proxies keep
// the connection open. It ends when the client goes away or the server stops.
func (s *Server) stream(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	changed := s.src.Changed()
	stop := s.stop
	keepAlive := s.o.KeepAlive
	src := s.src
	gauge := s.m.sseConns
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		gauge.Inc()
		defer gauge.Dec()
		if _, err := w.WriteString("retry: 2000\n: connected\n\n"); err != nil || w.Flush() != nil {
			return
		}
		tick := time.NewTicker(keepAlive)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := w.WriteString(": keep-alive\n\n"); err != nil || w.Flush() != nil {
					return
				}
			case <-changed:
				changed = src.Changed()
				snap := src.Current()
				if snap == nil {
					continue
				}
				v := strconv.FormatUint(snap.Version(), 10)
				msg := "id: " + v + "\nevent: message\ndata: {\"type\":\"refetchEvaluation\",\"etag\":\"" + v +
					"\",\"lastModified\":" + strconv.FormatInt(time.Now().Unix(), 10) + "}\n\n"
				if _, err := w.WriteString(msg); err != nil || w.Flush() != nil {
					return
				}
			}
		}
	})
}

// trackEvent is OpenFeature's tracking call as pennon accepts it.
type trackEvent struct {
	Key     string         `json:"key"`
	Context map[string]any `json:"context"`
	Details map[string]any `json:"details"`
}

// track accepts an OpenFeature tracking event: {"key": event name,
// "context": evaluation context with targetingKey, "details": {"value":
// number, ...}}. With an experiment recorder the event is joined to the
// experiments that list its key as a metric (by targeting key); nothing
// else is stored. The answer says whether it was joined.
func (s *Server) track(ctx *fasthttp.RequestCtx) {
	if !s.checkContentType(ctx, "") {
		return
	}
	var ev trackEvent
	if err := json.Unmarshal(ctx.PostBody(), &ev); err != nil {
		s.writeError(ctx, fasthttp.StatusBadRequest, "", "PARSE_ERROR", "tracking event must be a JSON object {key, context, details}: "+err.Error())
		return
	}
	if ev.Key == "" || len(ev.Key) > maxTrackKey {
		s.writeError(ctx, fasthttp.StatusBadRequest, "", "PARSE_ERROR", fmt.Sprintf("tracking event needs a \"key\" of 1-%d bytes (the event name)", maxTrackKey))
		return
	}
	value, hasValue := 0.0, false
	if raw, ok := ev.Details["value"]; ok && raw != nil {
		v, ok := raw.(float64)
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			s.writeError(ctx, fasthttp.StatusBadRequest, "", "PARSE_ERROR", "details.value must be a number (the event's numeric value), got "+truncate(fmt.Sprint(raw), 64))
			return
		}
		value, hasValue = v, true
	}
	joined := false
	if s.o.Experiments != nil {
		if tk, ok := ev.Context["targetingKey"].(string); ok && tk != "" {
			joined = s.o.Experiments.Track(ev.Key, tk, value, hasValue)
		}
	}
	s.m.requests.WithLabelValues("track", "202").Inc()
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetContentType(contentType)
	if joined {
		ctx.SetBodyString(`{"accepted":true,"joined":true}`)
	} else {
		ctx.SetBodyString(`{"accepted":true,"joined":false}`)
	}
}

// maxTrackKey bounds a tracking event's name.
const maxTrackKey = 256
