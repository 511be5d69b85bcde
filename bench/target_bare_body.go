package bench

import "github.com/valyala/fasthttp"

// StartBareBody starts a bare fasthttp target answering every request
// with body: the ceiling for an answer of that size (a bulk answer over
// 1,000 flags is ~90 KB, where the 40-byte bare target says nothing about
// copying and parsing the bytes).
func StartBareBody(label string, body []byte) (*Target, error) {
	body = append([]byte(nil), body...)
	return startFastHTTP(label, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.Response.SetBodyRaw(body) // immutable: no copy per request
	})
}
