package fleet

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	flagsync "github.com/pennon-dev/pennon/sync"
)

// car is one simulated sidecar: the real sync client and a watcher that
// notes when each new version became the served snapshot.
type car struct {
	r      *flagsync.Remote
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	seen []seenAt // strictly increasing versions, with when they were first served
}

type seenAt struct {
	v uint64
	t time.Time
}

// startCar starts sidecar i: control plane i mod replicas, NATS node i mod
// nodes (one URL, as a sidecar configured with its nearest node; the
// client learns the other nodes from the cluster and fails over to them).
func (h *harness) startCar(i int) (*car, error) {
	o := flagsync.RemoteOptions{
		Env:            Env,
		ServerURL:      "http://" + h.cps[i%len(h.cps)].addr,
		NATSURL:        h.cluster.ClientURL(i % h.cluster.Len()),
		Token:          h.token,
		ID:             fmt.Sprintf("fleet-%05d", i),
		PollInterval:   h.o.PollInterval,
		ReconcileEvery: h.o.ReconcileEvery,
		SilenceAfter:   h.o.SilenceAfter,
		LeaseFor:       h.o.LeaseFor,
	}
	r, err := flagsync.NewRemote(o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &car{r: r, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = r.Run(ctx) }()
	go func() { defer wg.Done(); c.watch(ctx) }()
	go func() { wg.Wait(); close(c.done) }()
	return c, nil
}

// watch records every snapshot swap. The channel is taken before reading
// the current snapshot, so no swap goes unseen; several swaps between two
// wake-ups are all credited to the later time (an upper bound).
func (c *car) watch(ctx context.Context) {
	for {
		ch := c.r.Changed()
		if s := c.r.Current(); s != nil {
			c.observe(s.Version(), time.Now())
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func (c *car) observe(v uint64, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.seen); n == 0 || v > c.seen[n-1].v {
		c.seen = append(c.seen, seenAt{v, t})
	}
}

// appliedAt is when this sidecar first served version v or later.
func (c *car) appliedAt(v uint64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := sort.Search(len(c.seen), func(i int) bool { return c.seen[i].v >= v })
	if i == len(c.seen) {
		return time.Time{}, false
	}
	return c.seen[i].t, true
}

// state is the sync state and the newest version the watcher has seen
// served (so a sidecar counted as converged has its delays recorded).
func (c *car) state() (string, uint64) {
	st, _ := c.r.Status().(flagsync.RemoteStatus)
	c.mu.Lock()
	defer c.mu.Unlock()
	var v uint64
	if n := len(c.seen); n > 0 {
		v = c.seen[n-1].v
	}
	return st.State, v
}

// pollingEntries is how many times this sidecar has entered polling so far.
func (c *car) pollingEntries() int {
	st, _ := c.r.Status().(flagsync.RemoteStatus)
	return st.Transitions[flagsync.StatePolling]
}
