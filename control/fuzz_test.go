package control

import (
	"errors"
	"net/http"
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
	})
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
