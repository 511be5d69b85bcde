package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
)

// TestWriteErrClassifiesByType: every kind of error a handler returns
// becomes the catalogue's body, decided by its type; infrastructure failures
// are 503 (with Retry-After), never a 4xx.
func TestWriteErrClassifiesByType(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		status     int
		code       ErrorCode
		field      string
		message    string
		retryAfter string
	}{
		{"typed field error", fieldErr(CodeValidation, "name", "name: bad"), 422, CodeValidation, "name", "name: bad", ""},
		{"wrapped typed error keeps its code", fmt.Errorf("ctx: %w", newErr(CodeDecided, "already")), 409, CodeDecided, "", "already", ""},
		{"errf with a status the code does not have", errf(http.StatusTeapot, CodeBadRequest, "x"), 400, CodeBadRequest, "", "x", ""},
		{"validation problems", &config.ValidationError{Problems: []evaluator.Problem{{Path: "flags.a.variants", Reason: "empty"}, {Path: "flags.b", Reason: "bad"}}},
			422, CodeValidation, "flags.a.variants", "the change would make the flag set invalid (2 problems); nothing was changed", ""},
		{"stale baseVersion", &config.ConflictError{Conflicts: []config.FlagConflict{{Flag: "a"}}}, 409, CodeConflict, "", "", ""},
		{"no environment", fmt.Errorf("head: %w", config.ErrEnvNotFound), 404, CodeNotFound, "", "environment not found", ""},
		{"body limit", &http.MaxBytesError{Limit: 10}, 413, CodeTooLarge, "", "request body exceeds 10 bytes", ""},
		{"NATS timeout", fmt.Errorf("kv get: %w", nats.ErrTimeout), 503, CodeUnavailable, "", "", "5"},
		{"request deadline", context.DeadlineExceeded, 503, CodeUnavailable, "", "", "5"},
		{"JetStream leader election", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "no leader"}, 503, CodeUnavailable, "", "", "5"},
		{"token store down", fmt.Errorf("%w: x", ErrTokenStoreUnavailable), 503, CodeUnavailable, "", "", "5"},
		{"anything else", errors.New("decode snapshot: bad"), 500, CodeInternal, "", "decode snapshot: bad", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeErr(rec, tc.err)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d (%s)", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			var body struct {
				Error map[string]json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %s: %v", rec.Body, err)
			}
			var code, field, msg string
			_ = json.Unmarshal(body.Error["code"], &code)
			_ = json.Unmarshal(body.Error["field"], &field)
			_ = json.Unmarshal(body.Error["message"], &msg)
			if code != string(tc.code) || field != tc.field || (tc.message != "" && msg != tc.message) || msg == "" {
				t.Errorf("body %s: want code %q field %q message %q", rec.Body, tc.code, tc.field, tc.message)
			}
			if tc.code == CodeConflict && len(body.Error["conflicts"]) < 3 {
				t.Errorf("conflict without conflicts: %s", rec.Body)
			}
			if tc.code == CodeValidation && tc.field == "flags.a.variants" && len(body.Error["problems"]) < 3 {
				t.Errorf("validation without problems: %s", rec.Body)
			}
		})
	}
}

// TestCatalogueStatuses: every code has a real status, and infrastructure
// failures are 5xx.
func TestCatalogueStatuses(t *testing.T) {
	for _, e := range Catalogue() {
		if e.Status < 400 || e.Status > 599 || http.StatusText(e.Status) == "" {
			t.Errorf("%s: status %d", e.Code, e.Status)
		}
		if e.Code.Status() != e.Status {
			t.Errorf("%s: Status() %d, catalogue %d", e.Code, e.Code.Status(), e.Status)
		}
	}
	if CodeUnavailable.Status() != 503 || CodeInternal.Status() != 500 || ErrorCode("nope").Status() != 500 {
		t.Error("infrastructure codes must be 5xx, and an unknown code 500")
	}
}

// TestCatalogueDocumented: docs/control.md's "Errors" table lists exactly
// the catalogue, with the same statuses.
func TestCatalogueDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/control.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (\\d{3}) \\|")
	documented := map[ErrorCode]int{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		n, _ := strconv.Atoi(m[2])
		documented[ErrorCode(m[1])] = n
	}
	for _, e := range Catalogue() {
		if documented[e.Code] != e.Status {
			t.Errorf("docs/control.md: code %s documented with status %d, catalogue says %d", e.Code, documented[e.Code], e.Status)
		}
		delete(documented, e.Code)
	}
	for c := range documented {
		t.Errorf("docs/control.md documents code %s, which is not in the catalogue (control/errors.go)", c)
	}
}

// TestEveryErrorCodeCatalogued: a handler written with the older errf and a
// string code still uses a code of the catalogue (an unknown code would
// answer with whatever status the call site chose, outside the contract).
func TestEveryErrorCodeCatalogued(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`(?:errf\([^,]+|newErr\(|fieldErr\()\s*,?\s*"([^"]*)"`)
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(data), -1) {
			if _, ok := catalogue[ErrorCode(m[1])]; !ok {
				t.Errorf("%s: error code %q is not in the catalogue (control/errors.go): use a Code constant", name, m[1])
			}
		}
	}
}
