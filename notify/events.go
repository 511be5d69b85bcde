package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EventsStream keeps recent events, one subject per environment
// ("pennon-events.<env>"), so `GET /api/v1/envs/{env}/events` survives a
// restart and every control-plane replica lists the same events. The subject
// does not start with "pennon." so no sidecar subscription pattern
// (pennon.*.live, pennon.*.heartbeat) can ever match it.
const EventsStream = "PENNON_EVENTS"

// EventsSubject is env's subject in EventsStream.
func EventsSubject(env string) string { return "pennon-events." + env }

// Retention defaults: a month, at most 1,000 events per environment, and
// 64 MiB in all, whichever comes first.
const (
	DefaultEventsMaxAge  = 30 * 24 * time.Hour
	DefaultEventsPerEnv  = 1000
	defaultEventsMaxByte = 64 << 20
)

type eventLog struct {
	js       jetstream.JetStream
	perEnv   int64
	stream   jetstream.Stream
	pubLimit time.Duration
}

func openEventLog(ctx context.Context, js jetstream.JetStream, o Options) (*eventLog, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              EventsStream,
		Description:       "pennon events (changes, approvals needed, anomalies, incidents, ...) per environment",
		Subjects:          []string{EventsSubject("*")},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            o.EventsMaxAge,
		MaxMsgsPerSubject: o.EventsPerEnv,
		MaxBytes:          defaultEventsMaxByte,
		MaxMsgSize:        64 << 10,
		// Several replicas may emit the same event (a rewind seen by each);
		// an ID derived from its content is stored once.
		Duplicates: 2 * time.Minute,
		Replicas:   max(o.Replicas, 1),
		Storage:    jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	return &eventLog{js: js, perEnv: o.EventsPerEnv, stream: st, pubLimit: 5 * time.Second}, nil
}

// append stores e; a duplicate ID within the window is stored once.
func (l *eventLog) append(ctx context.Context, e Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.pubLimit)
	defer cancel()
	_, err = l.js.Publish(ctx, EventsSubject(e.Env), data, jetstream.WithMsgID(e.ID))
	return err
}

// list returns env's most recent events, newest first, at most limit. It
// reads the environment's subject in order (bounded by the stream's
// per-subject limit) and keeps the last limit.
func (l *eventLog) list(ctx context.Context, env string, limit int) ([]Event, error) {
	out := []Event{}
	if limit <= 0 {
		return out, nil
	}
	// The server removes the consumer 30 s after this read (the library's
	// default, 5 min, would let a console polling every few seconds pile up
	// dozens of idle consumers).
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{EventsSubject(env)}, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", env, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", env, err)
	}
	pending := int(info.NumPending)
	ring := make([]Event, 0, min(limit, pending))
	next := 0
	for got := 0; got < pending; {
		batch, err := cons.Fetch(min(256, pending-got), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("events of %s: %w", env, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var e Event
			if json.Unmarshal(m.Data(), &e) != nil {
				continue
			}
			if len(ring) < limit {
				ring = append(ring, e)
			} else {
				ring[next] = e
				next = (next + 1) % limit
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("events of %s: %w", env, err)
		}
		if n == 0 {
			break // expired or purged meanwhile
		}
		got += n
	}
	// ring holds the last events oldest first starting at next.
	for i := len(ring) - 1; i >= 0; i-- {
		out = append(out, ring[(next+i)%len(ring)])
	}
	return out, nil
}
