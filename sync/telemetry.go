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

	"github.com/nats-io/nats.go"

	"github.com/pennon-dev/pennon/telemetry"
)

// SendTelemetry delivers a telemetry batch to the control plane: as a NATS
// request on this sidecar's own subject while the connection is up, else
// (or when NATS does not answer) over the API with the sidecar's token. It
// returns nil only when the control plane acknowledged the batch, so the
// telemetry.Shipper keeps and resends anything unconfirmed.
func (r *Remote) SendTelemetry(ctx context.Context, b telemetry.Batch) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("%w: %v", telemetry.ErrRefused, err)
	}
	if nc := r.nc.Load(); nc != nil && nc.IsConnected() {
		if subject := r.creds.reportSubject(); subject != "" {
			err := r.sendTelemetryNATS(ctx, nc, telemetry.SidecarSubject(subject, b.Kind), data)
			if err == nil || errors.Is(err, telemetry.ErrRefused) {
				return err
			}
			// No responder, a timeout or a permission error (credentials
			// minted before telemetry existed): the API still works.
		}
	}
	return r.sendTelemetryHTTP(ctx, data)
}

func (r *Remote) sendTelemetryNATS(ctx context.Context, nc *nats.Conn, subject string, data []byte) error {
	m, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return err
	}
	var ack telemetry.Ack
	if err := json.Unmarshal(m.Data, &ack); err != nil {
		return fmt.Errorf("telemetry acknowledgement: %w", err)
	}
	switch {
	case ack.Error == "":
		return nil
	case ack.Retry:
		return errors.New(ack.Error)
	default:
		return fmt.Errorf("%w: %s", telemetry.ErrRefused, ack.Error)
	}
}

func (r *Remote) sendTelemetryHTTP(ctx context.Context, data []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", r.o.ServerURL+"/api/v1/envs/"+url.PathEscape(r.o.Env)+"/telemetry", bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+r.o.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnprocessableEntity,
		resp.StatusCode == http.StatusRequestEntityTooLarge, resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %d %s", telemetry.ErrRefused, resp.StatusCode, bytes.TrimSpace(body))
	default:
		return fmt.Errorf("control plane answered %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
}

// ID is this sidecar's name in reports and telemetry.
func (r *Remote) ID() string { return r.o.ID }

// Env is the environment this sidecar follows.
func (r *Remote) Env() string { return r.o.Env }
