package proxy

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestOFREPBodiesAsFlagd pins how request bodies are read where pennon
// answers what flagd's OFREP handler (flagd/pkg/service/flag-evaluation/
// ofrep/handler.go, extractOfrepRequest and flagdContext) answers, including
// the lenient cases (a non-object or null context, a null body, member names
// in any case, the last member winning, trailing data) and the error code of
// a malformed body (INVALID_CONTEXT).
func TestOFREPBodiesAsFlagd(t *testing.T) {
	s := newTestServer(t, testFlags)
	h := s.Handler()
	tests := []struct {
		name   string
		flagd  string
		body   string
		status int
		value  string // decoded "value" for 200s
		reason string
	}{
		{"empty body is an empty context", "json.Decoder gives io.EOF, which extractOfrepRequest accepts",
			``, 200, "blue", "TARGETING_MATCH"},
		{"blank body is an empty context", "io.EOF as well",
			" \n\t", 200, "blue", "TARGETING_MATCH"},
		{"empty object", "no context member: empty context",
			`{}`, 200, "blue", "TARGETING_MATCH"},
		{"null context", "flagdContext ignores a context that is not an object",
			`{"context": null}`, 200, "blue", "TARGETING_MATCH"},
		{"context is read", "request.Context is the evaluation context",
			`{"context": {"plan": "premium"}}`, 200, "red", "TARGETING_MATCH"},
		{"other members are ignored", "ofrep.Request has only context; encoding/json ignores the rest",
			`{"context": {"plan": "premium"}, "flagKey": "x", "extra": [1, 2]}`, 200, "red", "TARGETING_MATCH"},
		{"malformed body is a 400 naming the flag", "decode error → 400 with the flag key and an error code",
			`{"context":`, 400, "", ""},
		{"body that is an array is a 400 naming the flag", "cannot unmarshal an array into ofrep.Request → 400",
			`[1, 2]`, 400, "", ""},
		{"context that is not an object is ignored", "flagdContext: not a map → warning, empty context",
			`{"context": ["premium"]}`, 200, "blue", "TARGETING_MATCH"},
		{"null body is an empty context", "Decode(null) leaves the request zero → empty context",
			`null`, 200, "blue", "TARGETING_MATCH"},
		{"member names match case-insensitively", "encoding/json matches field names case-insensitively",
			`{"Context": {"plan": "premium"}}`, 200, "red", "TARGETING_MATCH"},
		{"the last context member wins", "encoding/json: a repeated member replaces the earlier one",
			`{"context": {"plan": "premium"}, "context": {"plan": "free"}}`, 200, "blue", "TARGETING_MATCH"},
		{"data after the body is ignored", "json.Decoder.Decode reads the first value only",
			`{"context": {"plan": "premium"}} trailing`, 200, "red", "TARGETING_MATCH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			request(&ctx, "POST", "/ofrep/v1/evaluate/flags/color", []byte(tt.body))
			h(&ctx)
			var got struct {
				Key       string `json:"key"`
				Value     any    `json:"value"`
				Reason    string `json:"reason"`
				ErrorCode string `json:"errorCode"`
			}
			if err := json.Unmarshal(ctx.Response.Body(), &got); err != nil {
				t.Fatalf("body %q is not JSON: %v", ctx.Response.Body(), err)
			}
			if ctx.Response.StatusCode() != tt.status || got.Key != "color" {
				t.Fatalf("status %d key %q (%s), want %d for flag color\nflagd: %s", ctx.Response.StatusCode(), got.Key, ctx.Response.Body(), tt.status, tt.flagd)
			}
			if tt.status == 200 && (got.Value != tt.value || got.Reason != tt.reason) {
				t.Fatalf("value %v reason %s, want %s %s\nflagd: %s", got.Value, got.Reason, tt.value, tt.reason, tt.flagd)
			}
			if tt.status != 200 && got.ErrorCode == "" {
				t.Fatalf("a %d without an errorCode: %s", tt.status, ctx.Response.Body())
			}
		})
	}
}
