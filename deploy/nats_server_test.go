package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsauth"
)

// TestShippedNATSConfig runs a real nats-server on the nats.conf that
// deploy/k8s and the Helm chart ship, with the auth.conf that
// `pennon server nats-config` generates included next to it, exactly as the
// pods mount them. The static checks in security_test.go say the file looks
// right; this says the server it configures refuses anonymous and foreign
// clients, gives the control plane JetStream, and holds a sidecar and a
// read-only operator to their permissions. Only what a pod cannot have in a
// test changes: listen ports (random, loopback), the store directory, the
// pid file and the cluster routes (one node).
func TestShippedNATSConfig(t *testing.T) {
	k8s := &objects{}
	b, err := os.ReadFile(filepath.Join("k8s", "nats.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decodeAll(t, k8s, "nats.yaml", b)
	chartOut, _ := renderChart(t, map[string]any{"control": map[string]any{"adminToken": "x"}})
	chart := &objects{}
	decodeAll(t, chart, "rendered chart", []byte(chartOut))

	for _, tc := range []struct {
		name, conf string
	}{
		{"deploy/k8s", k8s.configMap("nats-config").Data["nats.conf"]},
		{"helm chart", chart.configMap("pennon-nats-config").Data["nats.conf"]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.conf == "" {
				t.Fatal("no nats.conf")
			}
			keys, err := natsauth.Generate()
			if err != nil {
				t.Fatal(err)
			}
			url := startShippedNATS(t, tc.conf, keys.AuthConf())
			checkNATSAuthorization(t, url, keys)
		})
	}

	// With nats.tls.enabled the chart's client and route tls blocks must
	// parse, and clients must verify the server against ca.crt: a client
	// without the CA is refused, one with it connects (and is still
	// subject to authorization).
	t.Run("helm chart with TLS", func(t *testing.T) {
		out, _ := renderChart(t, map[string]any{
			"control": map[string]any{"adminToken": "x"},
			"nats":    map[string]any{"tls": map[string]any{"enabled": true, "secret": "pennon-nats-tls"}},
		})
		o := &objects{}
		decodeAll(t, o, "rendered chart", []byte(out))
		tlsDir := t.TempDir()
		ca := writeTestPKI(t, tlsDir)
		conf := strings.ReplaceAll(o.configMap("pennon-nats-config").Data["nats.conf"], "/etc/nats/tls/", tlsDir+"/")
		keys, err := natsauth.Generate()
		if err != nil {
			t.Fatal(err)
		}
		url := startShippedNATS(t, conf, keys.AuthConf())
		cp, err := keys.ControlPlane(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		creds := nats.UserJWTAndSeed(cp.JWT, string(cp.Seed))
		if nc, err := nats.Connect(url, nats.NoReconnect(), creds); err == nil {
			nc.Close()
			t.Error("a client that does not trust the CA connected")
		}
		if nc, err := nats.Connect(url, nats.NoReconnect(), nats.RootCAs(ca)); err == nil {
			nc.Close()
			t.Error("an anonymous TLS client connected")
		}
		nc, err := nats.Connect(url, nats.NoReconnect(), nats.RootCAs(ca), creds)
		if err != nil {
			t.Fatalf("control plane over TLS: %v", err)
		}
		defer nc.Close()
		if !nc.TLSRequired() {
			t.Error("the server does not require TLS")
		}
	})
}

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 and
// localhost (valid for server and client auth, as routes need) into dir
// as tls.crt, tls.key and ca.crt, and returns the CA file's path.
func writeTestPKI(t *testing.T, dir string) string {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, srvKey := newKey(), newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pennon test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pennon-nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.crt":  {Type: "CERTIFICATE", Bytes: caDER},
		"tls.crt": {Type: "CERTIFICATE", Bytes: srvDER},
		"tls.key": {Type: "EC PRIVATE KEY", Bytes: srvKeyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "ca.crt")
}

// startShippedNATS writes conf and auth side by side (as the projected
// volume does), loads them with nats-server's own config parser and starts
// the server. It returns the client URL.
func startShippedNATS(t *testing.T, conf, auth string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, natsauth.AuthConfFile), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "nats-0") // server_name: $POD_NAME
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatalf("nats-server rejects the shipped config: %v", err)
	}
	if opts.NoAuthUser != "" || len(opts.TrustedOperators) != 1 || opts.AccountResolver == nil || opts.SystemAccount == "" {
		t.Fatalf("not operator mode: no_auth_user %q, %d operators, resolver %v, system account %q",
			opts.NoAuthUser, len(opts.TrustedOperators), opts.AccountResolver, opts.SystemAccount)
	}
	if opts.MaxPayload != 8<<20 {
		t.Errorf("max_payload %d, want %d (the embedded server's)", opts.MaxPayload, 8<<20)
	}
	if !opts.JetStream {
		t.Error("jetstream is not enabled")
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir, opts.PidFile = t.TempDir(), ""
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	return s.ClientURL()
}

// permErrors collects the asynchronous errors the server sends a client
// (permission violations arrive this way, not as Publish errors).
type permErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err.Error())
}

// waitFor polls until an error containing want has arrived.
func (p *permErrors) waitFor(t *testing.T, want string) {
	t.Helper()
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.errs {
			if strings.Contains(e, want) {
				return nil
			}
		}
		return errors.New("no error containing " + want + " yet; got " + strings.Join(p.errs, "; "))
	})
}

func checkNATSAuthorization(t *testing.T, url string, keys *natsauth.Keys) {
	t.Helper()
	const env = "production"

	// Nobody is anonymous, and a user signed by another account's key
	// (someone else's operator setup) is a stranger too.
	t.Run("anonymous refused", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous client connected")
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("anonymous connect: %v, want an authorization violation", err)
		}
	})
	t.Run("foreign account refused", func(t *testing.T) {
		other, err := natsauth.Generate()
		if err != nil {
			t.Fatal(err)
		}
		cred, err := other.ControlPlane(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, nats.NoReconnect(), nats.UserJWTAndSeed(cred.JWT, string(cred.Seed)))
		if err == nil {
			nc.Close()
			t.Fatal("a user of a foreign account connected")
		}
	})

	// The control plane owns JetStream in the PENNON account.
	cp, err := keys.ControlPlane(0)
	if err != nil {
		t.Fatal(err)
	}
	control, err := nats.Connect(url, nats.UserJWTAndSeed(cp.JWT, string(cp.Seed)))
	if err != nil {
		t.Fatalf("control plane credentials refused: %v", err)
	}
	t.Cleanup(control.Close)
	js, err := control.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: config.StreamName(env), Subjects: []string{config.LogSubject(env)}}); err != nil {
		t.Fatalf("control plane cannot create a stream (JetStream not enabled for the account?): %v", err)
	}
	if _, err := js.Publish(config.LogSubject(env), []byte(`{"version":1}`)); err != nil {
		t.Fatalf("control plane cannot commit: %v", err)
	}
	if got := control.MaxPayload(); got != 8<<20 {
		t.Errorf("max payload the client sees: %d, want %d", got, 8<<20)
	}
	live, err := control.SubscribeSync(config.LiveSubject(env))
	if err != nil {
		t.Fatal(err)
	}
	if err := control.Flush(); err != nil {
		t.Fatal(err)
	}

	// A sidecar: its own nkey, a user JWT the control plane signs.
	t.Run("sidecar", func(t *testing.T) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		// The permission set docs/security.md documents for a sidecar,
		// spelled out here rather than taken from natsauth so this test
		// checks the shipped server config against the documented contract.
		report := config.SidecarSubject(env) + ".sidecar-1"
		uc := jwt.NewUserClaims(pub)
		uc.Name = "pennon-sidecar " + env
		uc.Expires = time.Now().Add(time.Hour).Unix()
		uc.Sub.Allow.Add(config.LiveSubject(env), config.HeartbeatSubject(env))
		uc.Pub.Allow.Add(report)
		// Signed by the account's signing key (account.seed) on behalf of the account.
		uc.IssuerAccount = keys.AccountPublicKey()
		tok, err := uc.Encode(keys.Account)
		if err != nil {
			t.Fatal(err)
		}
		var perr permErrors
		nc, err := nats.Connect(url, nats.UserJWTAndSeed(tok, string(seed)), nats.ErrorHandler(perr.handler))
		if err != nil {
			t.Fatalf("sidecar credentials refused: %v", err)
		}
		defer nc.Close()
		sub, err := nc.SubscribeSync(config.LiveSubject(env))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := control.Publish(config.LiveSubject(env), []byte("v1")); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "v1" {
			t.Fatalf("sidecar did not receive its live subject: %v", err)
		}
		// What it must not do. Each is refused by the server, and the
		// stream is unchanged afterwards.
		for _, subj := range []string{config.LogSubject(env), config.LiveSubject(env), "$JS.API.STREAM.PURGE." + config.StreamName(env), config.LogSubject("staging")} {
			if err := nc.Publish(subj, []byte("forged")); err != nil {
				t.Fatal(err)
			}
			perr.waitFor(t, `Permissions Violation for Publish to "`+subj+`"`)
		}
		if _, err := nc.SubscribeSync(config.LiveSubject("staging")); err != nil {
			t.Fatal(err)
		}
		perr.waitFor(t, `Permissions Violation for Subscription to "`+config.LiveSubject("staging")+`"`)
		if err := nc.Publish(report, []byte(`{"id":"sidecar-1"}`)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		sjs, _ := nc.JetStream(nats.MaxWait(time.Second))
		if _, err := sjs.StreamInfo(config.StreamName(env)); err == nil {
			t.Error("the sidecar can use the JetStream API")
		}
		perr.waitFor(t, `Permissions Violation for Publish to "$JS.API.STREAM.INFO.`+config.StreamName(env)+`"`)
		info, err := js.StreamInfo(config.StreamName(env))
		if err != nil || info.State.Msgs != 1 {
			t.Errorf("stream after the sidecar's attempts: %+v, %v; want the control plane's 1 message", info, err)
		}
		// Only the control plane's publishes reach the live subject: the
		// server has already refused the forged one (the errors above), so
		// it would have been delivered before this sentinel.
		if err := control.Publish(config.LiveSubject(env), []byte("v2")); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"v1", "v2"} {
			if m, err := live.NextMsg(5 * time.Second); err != nil || string(m.Data) != want {
				t.Fatalf("live subject: got %v (%v), want %q", m, err, want)
			}
		}
	})

	t.Run("read-only operator", func(t *testing.T) {
		ro, err := keys.Readonly(0)
		if err != nil {
			t.Fatal(err)
		}
		var perr permErrors
		nc, err := nats.Connect(url, nats.UserJWTAndSeed(ro.JWT, string(ro.Seed)), nats.ErrorHandler(perr.handler))
		if err != nil {
			t.Fatalf("read-only credentials refused: %v", err)
		}
		defer nc.Close()
		if _, err := nc.SubscribeSync(config.HeartbeatSubject(env)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(config.LogSubject(env), []byte("forged")); err != nil {
			t.Fatal(err)
		}
		perr.waitFor(t, `Permissions Violation for Publish to "`+config.LogSubject(env)+`"`)
	})
}
