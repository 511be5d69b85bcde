package proxy

import (
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/evaluator"
)

// A sidecar rewound to the control plane's truth (a restore from backup,
// same-version drift) can serve a different flag set under the same
// version. Nothing keyed by "which flag set" may then answer from the old
// one: the single-flag response cache misses, and a client's bulk ETag from
// before gets the new answer, not a 304.
func TestSameVersionRewindIsNotServedStale(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 7))
	s := startServer(t, &h, func(o *Options) { o.CacheMinCost = 1 }) // cache every targeted flag
	single := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags/color"
	bulk := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags"
	ctxBody := `{"context":{"plan":"premium"}}`
	for range 3 { // fill the cache
		if _, _, body := do(t, "POST", single, "application/json", ctxBody); !strings.Contains(body, `"value":"red"`) {
			t.Fatalf("before: %s", body)
		}
		s.cache.Wait()
	}
	_, hdr, _ := do(t, "POST", bulk, "application/json", ctxBody)
	etag := hdr.Get("ETag")
	if etag == "" {
		t.Fatal("no bulk ETag")
	}

	rewound := strings.Replace(testFlags, `"premium"]}, "red", "blue"]`, `"premium"]}, "blue", "red"]`, 1)
	if rewound == testFlags {
		t.Fatal("test flags changed: the rewind edit no longer applies")
	}
	h.Store(mustSnapshot(t, rewound, 7)) // same version, other content
	if _, _, body := do(t, "POST", single, "application/json", ctxBody); !strings.Contains(body, `"value":"blue"`) {
		t.Fatalf("single answer after a same-version rewind came from the old flag set: %s", body)
	}
	code, hdr2, body := do(t, "POST", bulk, "application/json", ctxBody, "If-None-Match", etag)
	if code != 200 || !strings.Contains(body, `"value":"blue"`) || hdr2.Get("ETag") == etag {
		t.Fatalf("bulk after a same-version rewind: %d, ETag %s (was %s), body %s", code, hdr2.Get("ETag"), etag, body)
	}
}
