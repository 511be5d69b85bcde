package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
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
