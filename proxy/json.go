package proxy

import (
	"strconv"
	"unicode/utf8"

	"github.com/pennon-dev/pennon/evaluator"
)

// AppendJSONString appends s as a JSON string literal, as every OFREP
// answer writes strings (flagd's gRPC services use it to hand a request's
// context to the same decoder).
func AppendJSONString(dst []byte, s string) []byte { return appendString(dst, s) }

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD so
// the output is always valid JSON whatever a client sent as a flag key.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				switch c {
				case '\n':
					dst = append(dst, '\\', 'n')
				case '\r':
					dst = append(dst, '\\', 'r')
				case '\t':
					dst = append(dst, '\\', 't')
				default:
					dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
				}
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// appendResult appends one OFREP evaluation object: evaluationSuccess, or
// evaluationFailure / flagNotFound when the result carries an error code.
// A code-default success has no "value" (OFREP's codeDefaultFlag).
func appendResult(dst []byte, r *evaluator.Result) []byte {
	dst = appendResultHead(dst, r.Key)
	return appendResultTail(dst, r)
}

// appendResultHead appends what every answer of flag key starts with;
// appendResultTail appends the rest, which does not name the flag (bulk
// plans keep the head with the static bytes before a flag and share
// equal tails across flags, bulk.go).
func appendResultHead(dst []byte, key string) []byte {
	dst = append(dst, `{"key":`...)
	return appendString(dst, key)
}

func appendResultTail(dst []byte, r *evaluator.Result) []byte {
	if r.ErrorCode != evaluator.CodeNone {
		dst = append(dst, `,"errorCode":`...)
		dst = appendString(dst, string(r.ErrorCode))
		if r.ErrorDetails != "" {
			dst = append(dst, `,"errorDetails":`...)
			dst = appendString(dst, r.ErrorDetails)
		}
		if len(r.MetadataJSON) > 2 {
			dst = append(dst, `,"metadata":`...)
			dst = append(dst, r.MetadataJSON...)
		}
		return append(dst, '}')
	}
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, string(r.Reason))
	if r.Variant != "" {
		dst = append(dst, `,"variant":`...)
		dst = appendString(dst, r.Variant)
	}
	if r.HasValue {
		dst = append(dst, `,"value":`...)
		dst = append(dst, r.ValueJSON...)
	}
	dst = append(dst, `,"metadata":`...)
	if len(r.MetadataJSON) == 0 {
		dst = append(dst, '{', '}')
	} else {
		dst = append(dst, r.MetadataJSON...)
	}
	return append(dst, '}')
}

// appendError appends an error body with an OFREP error code.
func appendError(dst []byte, key string, code, details string) []byte {
	dst = append(dst, '{')
	if key != "" {
		dst = append(dst, `"key":`...)
		dst = appendString(dst, key)
		dst = append(dst, ',')
	}
	dst = append(dst, `"errorCode":`...)
	dst = appendString(dst, code)
	dst = append(dst, `,"errorDetails":`...)
	dst = appendString(dst, details)
	return append(dst, '}')
}

// AppendResult appends r as OFREP JSON (used by `pennon eval`).
func AppendResult(dst []byte, r *evaluator.Result) []byte { return appendResult(dst, r) }

func appendUint(dst []byte, v uint64) []byte { return strconv.AppendUint(dst, v, 10) }
