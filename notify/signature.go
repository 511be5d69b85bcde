package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a delivery's signature:
//
//	Pennon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// The timestamp is inside the signed text so a captured delivery cannot be
// replayed later with a fresh time: receivers refuse timestamps older than a
// few minutes. The secret is the webhook's, shown once at its creation.
const SignatureHeader = "Pennon-Signature"

// Sign returns the SignatureHeader value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrSignatureMalformed = errors.New("signature header malformed: want t=<unix>,v1=<hex>")
	ErrSignatureMismatch  = errors.New("signature does not match the body and secret")
	ErrSignatureExpired   = errors.New("signature timestamp outside the tolerance")
)

// Verify checks a SignatureHeader value against body, as a receiver does:
// the HMAC must match (compared in constant time) and the timestamp must be
// within tolerance of now (0: not checked).
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureMalformed
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrSignatureMalformed
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			ok = true
		}
	}
	if !ok {
		return ErrSignatureMismatch
	}
	if tolerance > 0 {
		d := now.Sub(time.Unix(sec, 0))
		if d > tolerance || d < -tolerance {
			return ErrSignatureExpired
		}
	}
	return nil
}
