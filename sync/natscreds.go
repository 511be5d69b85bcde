package flagsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/telemetry"
)

// natsCreds obtains and renews the sidecar's NATS credentials from the
// control plane in exchange for its API token, so operators distribute one
// secret, not two. The sidecar generates its own nkey at start; only the
// public half is sent, and the control plane signs a short-lived user JWT
// for it, scoped to this sidecar's environment.
//
// nats.go asks for the JWT on every (re)connect, from its own goroutine, so
// everything here is safe for concurrent use. A failed fetch is not retried
// before a back-off has passed: a NATS reconnect loop must not turn into a
// control-plane request loop.
type natsCreds struct {
	r  *Remote
	kp nkeys.KeyPair

	mu      sync.Mutex
	jwt     string
	expires time.Time
	report  string // subject this sidecar publishes reports on
	lastTry time.Time
	lastErr error
	backoff time.Duration
}

// credsRefreshMargin: credentials are renewed when less than this share of
// their lifetime (and at least 30s) is left.
const credsRefreshShare = 5

func newNATSCreds(r *Remote) (*natsCreds, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("nats: generate nkey: %w", err)
	}
	return &natsCreds{r: r, kp: kp}, nil
}

// userJWT is nats.UserJWT's callback: the current JWT, fetched or renewed
// when needed.
func (c *natsCreds) userJWT() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jwt != "" && time.Until(c.expires) > c.marginLocked() {
		return c.jwt, nil
	}
	if err := c.fetchLocked(context.Background()); err != nil {
		if c.jwt != "" && time.Now().Before(c.expires) {
			return c.jwt, nil // still valid: use it while renewal fails
		}
		return "", err
	}
	return c.jwt, nil
}

// sign is nats.UserJWT's signature callback.
func (c *natsCreds) sign(nonce []byte) ([]byte, error) { return c.kp.Sign(nonce) }

func (c *natsCreds) marginLocked() time.Duration {
	if c.expires.IsZero() {
		return 0
	}
	return 30 * time.Second
}

// renewAt is when the current credentials should be replaced (zero: none).
func (c *natsCreds) renewAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jwt == "" {
		return time.Time{}
	}
	return c.expires.Add(-max(time.Until(c.expires)/credsRefreshShare, 30*time.Second))
}

// renew fetches fresh credentials now (before the current ones expire).
func (c *natsCreds) renew(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastTry = time.Time{} // a planned renewal is not throttled
	return c.fetchLocked(ctx)
}

// publicKey is the sidecar's NATS user key (fixed for the process).
func (c *natsCreds) publicKey() string {
	pub, _ := c.kp.PublicKey()
	return pub
}

func (c *natsCreds) reportSubject() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.report
}

// errCredsThrottled is returned while a failed fetch's back-off runs.
var errCredsThrottled = errors.New("waiting before asking the control plane for NATS credentials again")

func (c *natsCreds) fetchLocked(ctx context.Context) error {
	if !c.lastTry.IsZero() && c.lastErr != nil && time.Since(c.lastTry) < c.backoff {
		return fmt.Errorf("%w: %v", errCredsThrottled, c.lastErr)
	}
	c.lastTry = time.Now()
	jwt, exp, report, err := c.request(ctx)
	c.lastErr = err
	if err != nil {
		c.backoff = min(max(2*c.backoff, c.r.o.PollInterval/4), 4*c.r.o.PollInterval)
		c.r.credentialsFailed(err)
		return err
	}
	c.backoff = 0
	c.jwt, c.expires, c.report = jwt, exp, report
	c.r.credentialsOK(exp)
	return nil
}

// authError is a 401/403 from the control plane: the token is wrong,
// revoked, expired, or has no role in this environment. It will not fix
// itself, so it is reported loudly once.
type authError struct {
	status int
	body   string
}

func (e *authError) Error() string {
	return fmt.Sprintf("control plane refused the API token (%d): %s", e.status, e.body)
}

func (c *natsCreds) request(ctx context.Context) (jwt string, exp time.Time, report string, err error) {
	pub, _ := c.kp.PublicKey()
	body, _ := json.Marshal(map[string]string{"id": c.r.o.ID, "publicKey": pub})
	ctx, cancel := context.WithTimeout(ctx, c.r.o.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", c.r.o.ServerURL+"/api/v1/envs/"+url.PathEscape(c.r.o.Env)+"/nats-credentials", bytes.NewReader(body))
	if err != nil {
		return "", time.Time{}, "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.r.o.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.r.http.Do(req)
	if err != nil {
		return "", time.Time{}, "", fmt.Errorf("NATS credentials: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return "", time.Time{}, "", &authError{status: resp.StatusCode, body: string(bytes.TrimSpace(b))}
		}
		return "", time.Time{}, "", fmt.Errorf("NATS credentials: control plane answered %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out struct {
		JWT           string    `json:"jwt"`
		Expires       time.Time `json:"expires"`
		ReportSubject string    `json:"reportSubject"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil || out.JWT == "" {
		return "", time.Time{}, "", fmt.Errorf("NATS credentials: malformed answer: %v", err)
	}
	return out.JWT, out.Expires, out.ReportSubject, nil
}

// connectNATS connects with credentials from the control plane and
// subscribes to this environment's live changesets and heartbeats. The
// connection retries forever in the background; nats.go asks userJWT for
// credentials on every attempt.
func (r *Remote) connectNATS(msgs, hbs chan *nats.Msg) (*nats.Conn, error) {
	nc, err := nats.Connect(r.o.NATSURL, r.natsOptions()...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", RedactURL(r.o.NATSURL), err)
	}
	if _, err := nc.ChanSubscribe(config.LiveSubject(r.o.Env), msgs); err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe %s: %w", config.LiveSubject(r.o.Env), err)
	}
	if _, err := nc.ChanSubscribe(config.HeartbeatSubject(r.o.Env), hbs); err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe heartbeats: %w", err)
	}
	if nc.IsConnected() {
		r.setNATS(true)
	}
	return nc, nil
}

func (r *Remote) natsOptions() []nats.Option {
	opts := []nats.Option{nats.Name("pennon-sidecar " + r.o.ID), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true),
		nats.UserJWT(r.creds.userJWT, r.creds.sign),
		// Replies (telemetry acknowledgements) come to an inbox only this
		// sidecar's credentials may subscribe to.
		nats.CustomInboxPrefix(telemetry.InboxPrefix(r.creds.publicKey())),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { r.natsDown(err) }),
		nats.ReconnectHandler(func(_ *nats.Conn) { r.natsBack() }),
		nats.ConnectHandler(func(_ *nats.Conn) { r.natsBack() }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { r.natsError(err) }),
	}
	if r.o.NATSCA != "" {
		opts = append(opts, nats.RootCAs(r.o.NATSCA))
	}
	return opts
}

func (r *Remote) natsDown(err error) {
	r.mu.Lock()
	planned := r.rotating || r.closing
	r.mu.Unlock()
	if planned {
		return // renewing credentials (the reconnect follows at once), or stopping
	}
	if err != nil && isNATSAuthError(err) {
		r.natsError(err)
	}
	r.setNATS(false)
}

func (r *Remote) natsBack() {
	r.mu.Lock()
	// A fresh connection gets one silence window for heartbeats to arrive
	// before it counts as quiet (the lease is separate and not extended).
	r.natsSince = time.Now()
	r.rotating = false
	r.mu.Unlock()
	r.setNATS(true)
	r.poke()
}

// natsError reports authorization problems (refused credentials, a
// permission violation) once per distinct cause, at error level.
func (r *Remote) natsError(err error) {
	if !isNATSAuthError(err) {
		return
	}
	r.mu.Lock()
	first := r.authErr != "NATS: "+err.Error()
	r.authErr = "NATS: " + err.Error()
	r.mu.Unlock()
	if first {
		r.log.Error("NATS refused this sidecar", zap.Error(err))
	}
}

func isNATSAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, nats.ErrAuthRevoked) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization") || strings.Contains(msg, "permissions violation") || strings.Contains(msg, "authentication")
}

// credentialsFailed records a failed credential fetch. A refused token is
// logged at error once (it will not fix itself); other failures are the
// ordinary unreachable-control-plane case the ladder already reports.
func (r *Remote) credentialsFailed(err error) {
	var ae *authError
	if !errors.As(err, &ae) {
		return
	}
	r.authFailed(err)
}

// authFailed records that the control plane refused our API token.
func (r *Remote) authFailed(err error) {
	r.mu.Lock()
	first := r.authErr != err.Error()
	r.authErr = err.Error()
	r.mu.Unlock()
	if first {
		r.log.Error("control plane refused this sidecar's API token: check --token (or --token-file) and its role in the environment", zap.Error(err))
	}
}

func (r *Remote) credentialsOK(expires time.Time) {
	r.mu.Lock()
	if strings.HasPrefix(r.authErr, "control plane refused") {
		r.log.Info("control plane accepts this sidecar's API token again")
		r.authErr = ""
	}
	r.credsUntil = expires
	r.mu.Unlock()
}

// scheduleRenewal sets t to fire when the credentials should be renewed.
func (r *Remote) scheduleRenewal(t *time.Timer) {
	at := r.creds.renewAt()
	d := time.Until(at)
	if at.IsZero() {
		d = r.o.PollInterval // none yet: try again soon
	}
	t.Reset(max(d, time.Second))
}

// renewNATS replaces the credentials before they expire: fetch new ones,
// then reconnect so the server sees them. The reconnect is planned, so the
// sync state does not bounce to polling and back.
func (r *Remote) renewNATS(ctx context.Context, nc *nats.Conn) {
	if err := r.creds.renew(ctx); err != nil {
		r.log.Warn("NATS credentials not renewed; will retry", zap.Error(err))
		return
	}
	if !nc.IsConnected() {
		return // the next reconnect attempt picks them up
	}
	r.mu.Lock()
	r.rotating = true
	r.mu.Unlock()
	if err := nc.ForceReconnect(); err != nil {
		r.mu.Lock()
		r.rotating = false
		r.mu.Unlock()
	}
}

// RedactURL hides the password (and a lone user, which may be a token) in a
// URL list such as a NATS server list, for logs and errors.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if err != nil && strings.Contains(p, "@") {
				parts[i] = "<unparsable URL with credentials>"
			}
			continue
		}
		u.User = url.User("REDACTED")
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
