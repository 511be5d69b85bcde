package control

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the admin API's contract (OpenAPI 3.1), kept next to the
// handlers it describes. It is the document the conformance test checks
// every route's real answers against, so it cannot drift from the code
// without a test failing; clients (the console, generated SDKs) read it
// from GET /api/v1/openapi.json.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the embedded OpenAPI document.
func OpenAPI() []byte { return append([]byte(nil), openAPIDoc...) }

// openAPI serves the document without authentication: it describes the
// API, holds no data, and a client needs it before it has a token.
func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request, _ principal) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, err := w.Write(openAPIDoc)
	return err
}
