package control

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/telemetry"
)

// NATSIssuer mints NATS credentials for sidecars (see internal/natsauth).
type NATSIssuer interface {
	// Sidecar signs a user JWT for userPub that may subscribe to subscribe
	// and publish only on publish, valid for ttl.
	Sidecar(userPub, name string, subscribe []string, publish string, ttl time.Duration) (jwt string, expires time.Time, err error)
	// ReportToken binds a sidecar's report subject to its ID.
	ReportToken(env, sidecarID string) string
}

// natsCredRequest is what a sidecar sends: its name and the public half of
// an nkey it generated (the private half never leaves the sidecar).
type natsCredRequest struct {
	ID        string `json:"id"`
	PublicKey string `json:"publicKey"`
}

// NATSCredentials is the answer: a user JWT for the sidecar's nkey, scoped
// to one environment, and where the sidecar may publish its reports.
type NATSCredentials struct {
	Env           string    `json:"env"`
	JWT           string    `json:"jwt"`
	Expires       time.Time `json:"expires"`
	Subscribe     []string  `json:"subscribe"`
	ReportSubject string    `json:"reportSubject"`
}

// natsCredentials exchanges an API token with a role in {env} for NATS
// credentials of a sidecar of {env}: subscribe to live and heartbeats,
// publish its own reports, nothing else. They never outlive the API token.
func (s *Server) natsCredentials(w http.ResponseWriter, r *http.Request, p principal) error {
	if s.o.NATS == nil {
		return newErr(CodeNotConfigured, "this control plane mints no NATS credentials (it was started without the NATS account key: --nats-account-seed-file); sidecars can only poll")
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	var req natsCredRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if !telemetry.ValidSidecarID(req.ID) {
		return fieldErr(CodeValidation, "id", "id: must be 1-%d printable characters without spaces (the sidecar's pod name), got %q", telemetry.MaxSidecarID, truncate(req.ID, 64))
	}
	ttl := s.o.SidecarCredentialTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	if exp := p.tok.ExpiresAt; exp != nil {
		left := time.Until(*exp)
		if left <= 0 {
			return newErr(CodeUnauthorized, "token expired")
		}
		ttl = min(ttl, left)
	}
	pub := strings.TrimSpace(req.PublicKey)
	// The inbox lets the sidecar hear the control plane's acknowledgements
	// of its telemetry; it is named after the sidecar's own key, so no
	// other sidecar may read it.
	subs := []string{config.LiveSubject(env), config.HeartbeatSubject(env), telemetry.InboxPrefix(pub) + ".>"}
	report := config.SidecarSubject(env) + "." + s.o.NATS.ReportToken(env, req.ID)
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	tok, exp, err := s.o.NATS.Sidecar(pub, "pennon-sidecar "+env+" "+req.ID, subs, report, ttl)
	if err != nil {
		return mintError(err)
	}
	s.credentials.WithLabelValues(env).Inc()
	s.log.Debug("sidecar NATS credentials issued", zap.String("env", env), zap.String("sidecar", req.ID), zap.String("token", p.tok.ID), zap.Time("expires", exp))
	return writeJSON(w, http.StatusOK, NATSCredentials{Env: env, JWT: tok, Expires: exp.UTC(), Subscribe: subs, ReportSubject: report})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func newCredentialsCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_nats_credentials_issued_total",
		Help: "NATS credentials minted for sidecars, by environment."}, []string{"env"})
}
