// Package natsrun starts an embedded nats-server with JetStream, the way
// `pennon dev`, `pennon server` and every test that needs NATS run it.
//
// The server always runs with authorization (operator mode, see
// internal/natsauth): there is no anonymous access, and no option to turn
// it off. Callers connect through Server.Connect with the control plane's
// identity, or with credentials minted from Server.Keys.
package natsrun

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pennon-dev/pennon/internal/natsauth"
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
	// Keys are the operator and accounts the server trusts. Nil generates a
	// fresh set in memory (tests; a restarted server then trusts nobody who
	// connected before, so persistent servers pass keys loaded from disk).
	Keys *natsauth.Keys
	// KeysDir, when Keys is nil and KeysDir is set, loads the keys from this
	// directory, creating them on first start. A persistent server must keep
	// its keys: JetStream files its streams under the account's public key.
	KeysDir string
	// TLS, when set, requires TLS from clients.
	TLSCert, TLSKey string
}

// Server is a running embedded server and the keys it trusts.
type Server struct {
	*server.Server
	Keys *natsauth.Keys

	mu   sync.Mutex
	cred *natsauth.Credential
}

// Start starts the server and waits until it accepts connections. Stop it
// with Shutdown and WaitForShutdown.
func Start(o Options) (*Server, error) {
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
	keys := o.Keys
	if keys == nil && o.KeysDir != "" {
		var err error
		if keys, _, err = natsauth.LoadOrCreate(o.KeysDir); err != nil {
			return nil, fmt.Errorf("natsrun: %w", err)
		}
	}
	if keys == nil {
		var err error
		if keys, err = natsauth.Generate(); err != nil {
			return nil, fmt.Errorf("natsrun: %w", err)
		}
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
	if err := keys.ConfigureServer(opts); err != nil {
		return nil, fmt.Errorf("natsrun: %w", err)
	}
	if o.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLSCert, KeyFile: o.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("natsrun: tls: %w", err)
		}
		opts.TLSConfig, opts.TLS = tc, true
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
	return &Server{Server: s, Keys: keys}, nil
}

// ControlCredential is the control plane's credential for this server,
// minted once per Server (it does not expire; it dies with the keys).
func (s *Server) ControlCredential() (natsauth.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cred == nil {
		c, err := s.Keys.ControlPlane(0)
		if err != nil {
			return natsauth.Credential{}, err
		}
		s.cred = &c
	}
	return *s.cred, nil
}

// Connect connects with the control plane's identity (every right in the
// PENNON account), plus opts.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	c, err := s.ControlCredential()
	if err != nil {
		return nil, err
	}
	return nats.Connect(s.ClientURL(), append([]nats.Option{nats.UserJWTAndSeed(c.JWT, string(c.Seed))}, opts...)...)
}
