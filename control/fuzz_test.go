package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/internal/sign"
)

// FuzzDecodeWriteRequest feeds arbitrary bodies to the strict JSON decoder
// used by every write endpoint: it must return an *apiError or nil, never
// panic.
func FuzzDecodeWriteRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"reason":"x","emergency":true,"changes":[]}`,
		`{"changes":[{"op":"set","key":"a"}]}`, `{"bogus":1}`, `{"reason":`, "\x00",
		`{"reason":"a","reason":"b"}`, `{"Reason":"x"}`, `{"REASON":"x"}`, `{"reaſon":"x"}`, `{} {}`, `{}x`, `{"reason":"x"}   `,
		`{"changes":[{"flag":"a","Op":"put"}]}`, `{"changes":[{"flag":"a","definition":{"s":1,"s":2}}]}`, `[[[[[[[[[[`,
		`{"emergency":true,"emergency":false}`, `{"changes":null}`, `{"reason":"\u0072"}`, `{"re\u0061son":"x"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var wr writeRequest
		err := decodeBody(r, &wr)
		var ae *apiError
		if err != nil && !errors.As(err, &ae) {
			t.Fatalf("non-API error %T: %v", err, err)
		}
		if err != nil {
			if ae.Status != http.StatusBadRequest || ae.Message == "" {
				t.Fatalf("refusal without a 400 and a message: %+v", ae)
			}
			return
		}
		// Whatever the strict decoder accepts, encoding/json reads the same
		// way, and it holds no duplicate key, no case variant and nothing
		// after the value.
		var lenient writeRequest
		if err := json.Unmarshal([]byte(body), &lenient); err != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", body, err)
		}
		if !reflect.DeepEqual(normalise(lenient), normalise(wr)) {
			t.Fatalf("accepted %q but it decodes differently: %+v vs %+v", body, wr, lenient)
		}
		for _, variant := range []string{`"Reason"`, `"EMERGENCY"`, `"Changes"`} {
			if strings.Contains(body, variant) {
				t.Fatalf("accepted a case variant %s in %q", variant, body)
			}
		}
	})
}

// normalise makes empty and nil slices compare equal.
func normalise(w writeRequest) writeRequest {
	if len(w.Changes) == 0 {
		w.Changes = nil
	}
	for i := range w.Changes {
		if len(w.Changes[i].Definition) == 0 {
			w.Changes[i].Definition = nil
		}
	}
	return w
}

// FuzzParseRole checks that any role string is either a known role or a
// precise error, never a panic.
func FuzzParseRole(f *testing.F) {
	for _, s := range []string{"viewer", "editor", "approver", "admin", "", "ADMIN", "root"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseRole(s); err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}

// FuzzVerifyEntries feeds arbitrary exports (entries and anchors, as a
// tampered file would hold them) to the offline verifier: it must answer,
// never panic, and never call a chain with problems OK.
func FuzzVerifyEntries(f *testing.F) {
	f.Add(`[{"seq":1,"prevHash":"00","hash":"x"}]`, `{"checkpoint":{"seq":5,"hash":"h"}}`)
	f.Add(`[{"seq":2},{"seq":1,"action":"<missing>"}]`, `{"changesets":[{"env":"dev","version":1,"data":"eyJhdWRpdEhlYWQiOnsic2VxIjo5OSwiaGFzaCI6IngifX0="}]}`)
	f.Add(`[]`, `{"checkpoint":{"seq":18446744073709551615}}`)
	f.Add(`null`, `null`)
	key, _ := sign.Generate()
	trust := sign.NewTrust(key.Public())
	f.Fuzz(func(t *testing.T, entriesJSON, anchorsJSON string) {
		var entries []AuditEntry
		var anchors *AuditAnchors
		if json.Unmarshal([]byte(entriesJSON), &entries) != nil || json.Unmarshal([]byte(anchorsJSON), &anchors) != nil {
			return
		}
		res := VerifyEntries(entries, anchors, trust)
		if res.OK != (len(res.Problems) == 0) || (!res.OK && res.Problem == "") {
			t.Fatalf("inconsistent result: %+v", res)
		}
		if len(entries) > 0 && res.OK {
			t.Fatalf("entries not signed by the trusted key passed: %+v", res)
		}
	})
}
