//go:build tools

// Package deps pins modules that several packages are about to use, so that
// parallel work does not race on go.mod. Removed once every dependency has a
// real importer.
package deps

import (
	_ "github.com/HdrHistogram/hdrhistogram-go"
	_ "github.com/anishathalye/porcupine"
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/valyala/fasthttp"
	_ "go.uber.org/goleak"
	_ "go.uber.org/zap"
	_ "gopkg.in/yaml.v3"
)
