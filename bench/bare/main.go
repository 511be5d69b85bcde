// Command bare is the ceiling for the wrk comparison: a fasthttp server on
// loopback that answers every request with the same 40-byte JSON body and
// does nothing else. Usage: go run ./bench/bare -addr 127.0.0.1:18081
package main

import (
	"flag"
	"log"
	"net"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/bench"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address (loopback)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &fasthttp.Server{Name: "bare", Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(bench.BareBody)
	}}
	log.Fatal(srv.Serve(ln))
}
