// Command bare is the ceiling for the sidecar-as-a-process comparison
// (bench/wrk/run.sh): a fasthttp server on loopback that answers every
// request with one fixed JSON body and does nothing else.
//
// A ceiling only means something for an answer of the same size: pennon
// answers 76-89 bytes for one flag, and a 40-byte bare answer would flatter
// the ceiling. So -body-file makes it answer exactly the bytes pennon
// answered (the script saves them with curl first), and -name gives it the
// same Server header, so both processes write the same response.
//
//	go run ./bench/bare -addr 127.0.0.1:18081 [-body-file answer.json] [-name pennon]
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/bench"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address (loopback)")
	bodyFile := flag.String("body-file", "", "answer the bytes of this file (default: a fixed 40-byte JSON body)")
	name := flag.String("name", "bare", "Server header (give pennon's to answer byte for byte what pennon answers)")
	flag.Parse()
	body, err := loadBody(*bodyFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &fasthttp.Server{Name: *name, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.Response.SetBodyRaw(body) // never modified: no copy per request
	}}
	log.Fatal(srv.Serve(ln))
}

// loadBody returns the answer: the file's bytes, or bench.BareBody when
// no file is given. An empty file is refused, since a zero-byte answer is
// no ceiling for anything pennon answers.
func loadBody(path string) ([]byte, error) {
	if path == "" {
		return bench.BareBody, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-body-file: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("-body-file %s is empty: give the file holding the answer to imitate (e.g. saved with curl from the sidecar)", path)
	}
	return b, nil
}
