package control

import (
	"errors"
	"net/http"

	"github.com/pennon-dev/pennon/telemetry"
)

// telemetryIngest is the API path for sidecar telemetry (usage counts,
// incident records, experiment aggregates) from sidecars that cannot reach
// NATS: the same batches, stored the same way (idempotent by batch ID).
// Over the API the token, not a NATS subject, vouches for the sender, so a
// token of an environment can only send that environment's telemetry.
func (s *Server) telemetryIngest(w http.ResponseWriter, r *http.Request, p principal) error {
	if s.o.Telemetry == nil {
		return errf(http.StatusNotImplemented, "not_configured", "this control plane does not collect telemetry")
	}
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	var b telemetry.Batch
	if err := decodeBody(r, &b); err != nil {
		return err
	}
	if b.Env != env {
		return errf(http.StatusUnprocessableEntity, "validation", "env: the batch is for %q but was sent to %q", b.Env, env)
	}
	if err := s.o.Telemetry.Accept(r.Context(), b, "http"); err != nil {
		if errors.Is(err, telemetry.ErrRefused) {
			return errf(http.StatusUnprocessableEntity, "validation", "%v", err)
		}
		return errf(http.StatusServiceUnavailable, "unavailable", "%v", err)
	}
	return writeJSON(w, http.StatusOK, telemetry.Ack{Seq: b.Seq})
}
