// Package natsrun starts an embedded nats-server with JetStream, the way
// `pennon dev`, `pennon server` and every test that needs NATS run it.
package natsrun

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure an embedded server.
type Options struct {
	// DataDir holds JetStream's store. Required.
	DataDir string
	// Host and Port to listen on; Host defaults to 127.0.0.1, Port 0 picks a
	// random free port (-1 in nats-server terms).
	Host string
	Port int
	// SyncAlways fsyncs every write. A single-node store must use it so an
	// acknowledged change survives a power cut (JetStream otherwise flushes
	// only every few minutes). Tests may turn it off for speed.
	SyncAlways bool
	// ServerName, when set, names the server (useful in logs and clusters).
	ServerName string
}

// Start starts the server and waits until it accepts connections. Stop it
// with Shutdown and WaitForShutdown.
func Start(o Options) (*server.Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("natsrun: DataDir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = -1
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.DataDir,
		SyncAlways: o.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		// Changesets and snapshots of large flag sets exceed the 1 MiB default.
		MaxPayload: 8 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsrun: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsrun: server not ready within 10s")
	}
	return s, nil
}
