package bench

import (
	"strconv"
	"sync"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 100 ns to 60 s with 3 significant digits, in nanoseconds.
const (
	histMin    = 100
	histMax    = 60_000_000_000
	histDigits = 3
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

// recorder is one worker's tally since the collector last drained it. The
// mutex is taken by its worker per request and by the collector once a
// second, so it is uncontended in practice and costs ~20 ns.
type recorder struct {
	mu     sync.Mutex
	hist   *hdr.Histogram
	ok     int64
	errs   int64
	codes  map[string]int64
	first  string
	status [600]int64 // HTTP status counts without a map write per request
}

func newRecorder() *recorder {
	return &recorder{hist: newHist(), codes: map[string]int64{}}
}

// record adds one measured request. status 0 means a transport error.
func (r *recorder) record(latencyNS int64, status int, err error) {
	r.mu.Lock()
	if latencyNS < histMin {
		latencyNS = histMin
	}
	if latencyNS > histMax {
		latencyNS = histMax
	}
	_ = r.hist.RecordValue(latencyNS) // cannot fail: clamped to the range above
	switch {
	case status == 200:
		r.ok++
	default:
		r.errs++
		if r.first == "" {
			if err != nil {
				r.first = err.Error()
			} else {
				r.first = "HTTP " + strconv.Itoa(status)
			}
		}
	}
	if status > 0 && status < len(r.status) {
		r.status[status]++
	} else {
		r.codes["transport"]++
	}
	r.mu.Unlock()
}

// window is what the collector drains from all recorders for one interval.
type window struct {
	hist  *hdr.Histogram
	ok    int64
	errs  int64
	codes map[string]int64
	first string
}

// drainInto moves r's tally into w and resets r.
func (r *recorder) drainInto(w *window) {
	r.mu.Lock()
	w.hist.Merge(r.hist)
	r.hist.Reset()
	w.ok += r.ok
	w.errs += r.errs
	r.ok, r.errs = 0, 0
	for k, v := range r.codes {
		w.codes[k] += v
		delete(r.codes, k)
	}
	for code, n := range r.status {
		if n > 0 {
			w.codes[strconv.Itoa(code)] += n
			r.status[code] = 0
		}
	}
	if w.first == "" {
		w.first = r.first
	}
	r.mu.Unlock()
}
