package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
)

// The admin API answers every failure with one JSON shape,
//
//	{"error": {"code", "message", "field", "problems", "conflicts"}}
//
// where code is one of the catalogue below and decides the HTTP status. A
// client (the CLI, the console, a script) branches on code, shows message to
// a person, and points at field (a JSON path into the request, or a query
// parameter) when there is one. Handlers return errors; writeErr turns them
// into this body, so no handler writes an error of its own.
//
// The status belongs to the code, not to the call site: a code cannot be
// answered with two statuses, and an infrastructure failure (NATS or
// JetStream unreachable, a timeout) can only become "unavailable" (503) or
// "internal" (500), never a 4xx that tells the caller their request was wrong.

// ErrorCode names a kind of failure; each has exactly one HTTP status.
type ErrorCode string

// The error catalogue. docs/control.md ("Errors") and the OpenAPI document
// (components.schemas.Error) list the same codes; a test keeps them equal.
const (
	// CodeBadRequest: the request cannot be read: malformed JSON, an unknown
	// or duplicate field, a bad query or path parameter.
	CodeBadRequest ErrorCode = "bad_request"
	// CodeUnsupportedMedia: the body's Content-Type is not one the route reads.
	CodeUnsupportedMedia ErrorCode = "unsupported_media_type"
	// CodeTooLarge: the body exceeds the server's limit (1 MiB by default).
	CodeTooLarge ErrorCode = "too_large"
	// CodeValidation: the request was read but its content is refused: the
	// flag set it would produce is invalid, a policy is not met, or a field
	// has a value outside what it accepts. Nothing was changed.
	CodeValidation ErrorCode = "validation"
	// CodeUnauthorized: no token, or an unknown, revoked or expired one.
	CodeUnauthorized ErrorCode = "unauthorized"
	// CodeForbidden: the token lacks the role, or a review rule refuses the
	// action (authors cannot approve their own change). Audited.
	CodeForbidden ErrorCode = "forbidden"
	// CodeNotFound: the environment, flag, version, change request, token or
	// route does not exist.
	CodeNotFound ErrorCode = "not_found"
	// CodeConflict: a flag changed since the request's baseVersion;
	// conflicts lists each with its current version and definition.
	CodeConflict ErrorCode = "conflict"
	// CodeExists: the thing to create (an environment) already exists.
	CodeExists ErrorCode = "exists"
	// CodeDecided: the change request was already approved or rejected.
	CodeDecided ErrorCode = "decided"
	// CodeReviewed: the emergency change was already reviewed.
	CodeReviewed ErrorCode = "reviewed"
	// CodeNoSigningKey: the operation needs the control plane's signing key
	// and it runs without one.
	CodeNoSigningKey ErrorCode = "no_signing_key"
	// CodeNotConfigured: the feature is not enabled on this control plane.
	CodeNotConfigured ErrorCode = "not_configured"
	// CodeUnavailable: the store (NATS JetStream) is unreachable or electing
	// a leader; retry after Retry-After seconds.
	CodeUnavailable ErrorCode = "unavailable"
	// CodeInternal: a bug or corrupt data; the message says what failed.
	CodeInternal ErrorCode = "internal"
)

// CatalogueEntry is one code's HTTP status and what it means.
type CatalogueEntry struct {
	Code    ErrorCode
	Status  int
	Meaning string
}

var catalogue = map[ErrorCode]CatalogueEntry{
	CodeBadRequest:       {CodeBadRequest, http.StatusBadRequest, "the request cannot be read: malformed JSON, an unknown, duplicate or case-variant field, a bad query or path parameter"},
	CodeUnsupportedMedia: {CodeUnsupportedMedia, http.StatusUnsupportedMediaType, "the body's Content-Type is not one the route reads"},
	CodeTooLarge:         {CodeTooLarge, http.StatusRequestEntityTooLarge, "the body exceeds the server's limit (1 MiB by default)"},
	CodeValidation:       {CodeValidation, http.StatusUnprocessableEntity, "the content is refused (invalid flag set, policy not met, a value out of range); nothing was changed"},
	CodeUnauthorized:     {CodeUnauthorized, http.StatusUnauthorized, "no bearer token, or an unknown, revoked or expired one"},
	CodeForbidden:        {CodeForbidden, http.StatusForbidden, "the token lacks the role, or a review rule refuses the action; audited"},
	CodeNotFound:         {CodeNotFound, http.StatusNotFound, "the environment, flag, version, change request, token or route does not exist"},
	CodeConflict:         {CodeConflict, http.StatusConflict, "a flag changed since baseVersion; conflicts lists each with its current version and definition"},
	CodeExists:           {CodeExists, http.StatusConflict, "the environment to create already exists"},
	CodeDecided:          {CodeDecided, http.StatusConflict, "the change request was already approved or rejected"},
	CodeReviewed:         {CodeReviewed, http.StatusConflict, "the emergency change was already reviewed"},
	CodeNoSigningKey:     {CodeNoSigningKey, http.StatusConflict, "the control plane runs without a signing key, which the operation needs"},
	CodeNotConfigured:    {CodeNotConfigured, http.StatusNotImplemented, "the feature is not enabled on this control plane"},
	CodeUnavailable:      {CodeUnavailable, http.StatusServiceUnavailable, "the store (NATS JetStream) is unreachable or electing a leader; retry after Retry-After seconds"},
	CodeInternal:         {CodeInternal, http.StatusInternalServerError, "a bug or corrupt data; the message says what failed"},
}

// Status is the code's HTTP status; a code outside the catalogue is a bug
// and answers 500.
func (c ErrorCode) Status() int {
	if e, ok := catalogue[c]; ok {
		return e.Status
	}
	return http.StatusInternalServerError
}

// Catalogue lists every error code, sorted by status then code (docs and
// the OpenAPI document are checked against it).
func Catalogue() []CatalogueEntry {
	out := make([]CatalogueEntry, 0, len(catalogue))
	for _, e := range catalogue {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Status != out[j].Status {
			return out[i].Status < out[j].Status
		}
		return out[i].Code < out[j].Code
	})
	return out
}

// APIError is an error with its catalogue code, HTTP status and JSON body.
type APIError struct {
	Status  int       `json:"-"`
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// Field is the request field or query parameter at fault, as a JSON
	// path ("changes[0].flag", "name", "baseVersion"), when there is one.
	Field string `json:"field,omitempty"`
	// Problems lists every validation problem with its JSON path (422).
	Problems []problemJSON `json:"problems,omitempty"`
	// Conflicts lists each flag that moved past baseVersion (409 conflict).
	Conflicts []config.FlagConflict `json:"conflicts,omitempty"`
}

// apiError is the name handlers used before the catalogue was exported;
// kept so routes written against it still build.
type apiError = APIError

type problemJSON struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func (e *APIError) Error() string { return e.Message }

// newErr builds an error of a catalogued code; its status follows the code.
func newErr(code ErrorCode, format string, args ...any) *APIError {
	return &APIError{Status: code.Status(), Code: code, Message: fmt.Sprintf(format, args...)}
}

// fieldErr is newErr naming the field at fault.
func fieldErr(code ErrorCode, field, format string, args ...any) *APIError {
	e := newErr(code, format, args...)
	e.Field = field
	return e
}

// errf is the older constructor with an explicit status, kept for routes
// written before the catalogue: a catalogued code keeps its own status
// whatever is passed, so the catalogue stays true; prefer newErr.
func errf(status int, code ErrorCode, format string, args ...any) *APIError {
	e := newErr(code, format, args...)
	if _, ok := catalogue[code]; !ok {
		e.Status = status
	}
	return e
}

// storeUnavailable tells an outage of NATS/JetStream (503: retry) from a
// bug or bad data (500).
func storeUnavailable(err error) bool {
	for _, target := range []error{nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrConnectionReconnecting, nats.ErrNoResponders,
		nats.ErrDisconnected, jetstream.ErrNoStreamResponse, jetstream.ErrJetStreamNotEnabled, context.DeadlineExceeded, ErrTokenStoreUnavailable} {
		if errors.Is(err, target) {
			return true
		}
	}
	// JetStream answers 503 while a stream has no leader (an election after
	// a node loss) or the meta layer is unavailable: a retry will succeed.
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == http.StatusServiceUnavailable || errors.Is(err, jetstream.ErrNoHeartbeat)
}

// asAPIError classifies any error a handler returns, by type only: the
// package's own *APIError, the store's typed errors, the body limit, and
// infrastructure failures (503). Anything else is a 500 naming the error.
func asAPIError(err error) *APIError {
	var ae *APIError
	var ve *config.ValidationError
	var ce *config.ConflictError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		if c, ok := catalogue[ae.Code]; ok && ae.Status != c.Status {
			cp := *ae
			cp.Status = c.Status
			return &cp
		}
		return ae
	case errors.As(err, &ve):
		ae = newErr(CodeValidation, "the change would make the flag set invalid (%d problems); nothing was changed", len(ve.Problems))
		for _, p := range ve.Problems {
			ae.Problems = append(ae.Problems, problemJSON{Path: p.Path, Reason: p.Reason})
		}
		if len(ve.Problems) > 0 {
			ae.Field = ve.Problems[0].Path
		}
		return ae
	case errors.As(err, &ce):
		ae = newErr(CodeConflict, "%s re-read the flags and retry with the current versions as baseVersion", ce.Error())
		ae.Conflicts = ce.Conflicts
		return ae
	case errors.Is(err, config.ErrEnvNotFound):
		return newErr(CodeNotFound, "environment not found")
	case errors.Is(err, config.ErrVersionNotFound):
		return newErr(CodeNotFound, "%v", err)
	case errors.As(err, &mbe):
		return newErr(CodeTooLarge, "request body exceeds %d bytes", mbe.Limit)
	case storeUnavailable(err):
		return newErr(CodeUnavailable, "the store (NATS JetStream) is unreachable; retry shortly (after a failed write, read the flags back first: it may have been committed)")
	default:
		return newErr(CodeInternal, "%v", err)
	}
}

// writeErr answers err as the catalogue's JSON error body.
func writeErr(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	if ae.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	_ = writeJSON(w, ae.Status, map[string]any{"error": ae})
}

// mintError classifies a failure of NATSIssuer.Sidecar after the request was
// checked: the public key was valid, so what is left is the issuer's own
// failure (500), unless the issuer says the key was refused (422).
func mintError(err error) error {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return fmt.Errorf("minting sidecar NATS credentials: %w", err)
}
