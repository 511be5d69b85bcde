package fleet

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pennon-dev/pennon/config"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// steady commits one change per SteadyEvery.
func (h *harness) steady(ctx context.Context) (*ScenarioResult, error) {
	sr := &ScenarioResult{Name: ScenarioSteady,
		Description: fmt.Sprintf("%d commits, one every %v, alternating between the control-plane replicas", h.o.SteadyCommits, h.o.SteadyEvery)}
	h.progress("steady: %s", sr.Description)
	w := h.begin()
	commits, err := h.commitEvery(ctx, h.o.SteadyCommits, h.o.SteadyEvery, sr, nil)
	if err != nil {
		h.fill(sr, h.end(w))
		return sr, err
	}
	last := time.Now()
	sr.setConvergence(h.converge(ctx, h.head.Load(), last), "last commit acknowledged")
	h.fill(sr, h.end(w))
	h.delays(w.start, commits, sr)
	return sr, h.check(sr)
}

// commitEvery commits n changes, one per every; at(i) runs before commit i
// (the kill scenario stops a node there). Failed commits are counted, not
// fatal: during a failover some are expected to time out unacknowledged.
func (h *harness) commitEvery(ctx context.Context, n int, every time.Duration, sr *ScenarioResult, at func(i int)) ([]commitRec, error) {
	var commits []commitRec
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := range n {
		if at != nil {
			at(i)
		}
		sr.Commits++
		c, err := h.commit(ctx)
		if err != nil {
			sr.Failed++
			if sr.FirstError == "" {
				sr.FirstError = err.Error()
			}
		} else {
			commits = append(commits, c)
			sr.Acked++
		}
		if (i+1)%10 == 0 {
			h.progress("%s: %d/%d commits, %d acknowledged", sr.Name, i+1, n, sr.Acked)
		}
		if i == n-1 {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return commits, ctx.Err()
		}
	}
	return commits, nil
}

// check turns an unconverged fleet or lost acknowledged commits into an
// error (the result is still returned and written).
func (h *harness) check(sr *ScenarioResult) error {
	switch {
	case sr.NotConverged > 0:
		return fmt.Errorf("%d of %d sidecars did not reach the head within %v", sr.NotConverged, len(h.cars), h.o.ConvergeTimeout)
	case len(sr.LostAcked) > 0:
		return fmt.Errorf("acknowledged commits missing or changed after the node loss: versions %v", sr.LostAcked)
	case sr.Acked == 0:
		return fmt.Errorf("no commit was acknowledged (first error: %s)", sr.FirstError)
	}
	return nil
}

// restart stops every control-plane replica, keeps them down for Outage,
// starts them again, commits one change and waits until every sidecar
// serves it over push.
func (h *harness) restart(ctx context.Context) (*ScenarioResult, error) {
	sr := &ScenarioResult{Name: ScenarioRestart,
		Description: fmt.Sprintf("both control-plane replicas stopped for %v, restarted, then one commit", h.o.Outage)}
	h.progress("restart: %s", sr.Description)
	w := h.begin()
	var wg sync.WaitGroup
	for _, cp := range h.cps {
		wg.Go(cp.stop)
	}
	wg.Wait()
	down := time.Now()
	// The outage lasts Outage whatever the sidecars do; meanwhile note when
	// the whole fleet has noticed (left push).
	deadline := down.Add(h.o.Outage)
	for time.Now().Before(deadline) {
		if sr.AllLeftPushMs == 0 {
			inPush := 0
			for _, c := range h.cars {
				if st, _ := c.state(); st == flagsync.StatePush {
					inPush++
				}
			}
			if inPush == 0 {
				sr.AllLeftPushMs = ms(time.Since(down))
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			h.fill(sr, h.end(w))
			return sr, ctx.Err()
		}
	}
	up := time.Now()
	reqUp := h.totals().req // nothing can reach a stopped replica
	errs := make([]error, len(h.cps))
	for i, cp := range h.cps {
		wg.Go(func() { errs[i] = cp.start(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			h.fill(sr, h.end(w))
			return sr, fmt.Errorf("restart control plane %d: %w", i, err)
		}
	}
	sr.RestartMs = ms(time.Since(up))
	sr.Commits++
	c, err := h.commit(ctx)
	if err != nil {
		sr.Failed++
		sr.FirstError = err.Error()
		h.fill(sr, h.end(w))
		return sr, fmt.Errorf("commit after restart: %w", err)
	}
	sr.Acked++
	sr.setConvergence(h.converge(ctx, c.Version, up), "restart began")
	reqConverged := h.totals().req // fleet at the new head (and back on push, or timed out)
	h.fill(sr, h.end(w))
	h.delays(w.start, []commitRec{c}, sr)
	// Requests per sidecar from the restart to convergence: the cost of a
	// fleet reconnecting.
	sr.RequestsPerSidecarAfterRestart = float64(reqConverged-reqUp) / float64(len(h.cars))
	return sr, h.check(sr)
}

// kill commits KillCommits changes, stops the NATS node that leads the
// environment's stream after the first third, checks that every
// acknowledged commit is in the stream as committed, waits until the fleet
// is back on push at the head, and restarts the node.
func (h *harness) kill(ctx context.Context) (*ScenarioResult, error) {
	sr := &ScenarioResult{Name: ScenarioKill,
		Description: fmt.Sprintf("%d commits, one every %v; the stream leader's NATS node stopped after %d", h.o.KillCommits, h.o.KillEvery, h.o.KillCommits/3)}
	h.progress("kill: %s", sr.Description)
	before := make([]int, len(h.cars))
	for i, c := range h.cars {
		before[i] = c.pollingEntries()
	}
	w := h.begin()
	victim := -1
	var killed time.Time
	var killErr error
	commits, err := h.commitEvery(ctx, h.o.KillCommits, h.o.KillEvery, sr, func(i int) {
		if i != h.o.KillCommits/3 {
			return
		}
		victim, killErr = h.streamLeader(ctx)
		if killErr != nil {
			return
		}
		sr.KilledNode = h.cluster.Name(victim)
		killed = time.Now()
		sr.KilledAtS = killed.Sub(w.start).Seconds()
		h.progress("kill: stopping NATS node %s (leader of %s)", sr.KilledNode, config.StreamName(Env))
		h.cluster.Stop(victim)
	})
	if err == nil {
		err = killErr
	}
	if err != nil {
		h.fill(sr, h.end(w))
		return sr, err
	}
	last := time.Now()
	head, err := h.trueHead(ctx)
	if err != nil {
		h.fill(sr, h.end(w))
		return sr, err
	}
	sr.setConvergence(h.converge(ctx, head, last), "last commit")
	sr.LostAcked, err = h.verifyAcked(ctx, commits)
	if err != nil {
		h.fill(sr, h.end(w))
		return sr, err
	}
	for i, c := range h.cars {
		if c.pollingEntries() > before[i] {
			sr.LeftPush++
		}
	}
	h.fill(sr, h.end(w))
	h.delays(w.start, commits, sr)
	if victim >= 0 {
		h.progress("kill: restarting NATS node %s", sr.KilledNode)
		if err := h.cluster.Restart(victim); err != nil {
			return sr, err
		}
	}
	return sr, h.check(sr)
}

// streamLeader is the index of the node leading the environment's stream.
func (h *harness) streamLeader(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := h.monJS.Stream(cctx, config.StreamName(Env))
	if err != nil {
		return -1, fmt.Errorf("stream %s: %w", config.StreamName(Env), err)
	}
	info, err := st.Info(cctx)
	if err != nil {
		return -1, fmt.Errorf("stream %s info: %w", config.StreamName(Env), err)
	}
	if info.Cluster == nil || info.Config.Replicas != 3 {
		return -1, fmt.Errorf("stream %s is not replicated (replicas %d): the kill scenario needs R3", config.StreamName(Env), info.Config.Replicas)
	}
	i := h.cluster.NodeNamed(info.Cluster.Leader)
	if i < 0 {
		return -1, fmt.Errorf("stream %s: leader %q is not a node of this cluster", config.StreamName(Env), info.Cluster.Leader)
	}
	return i, nil
}

// verifyAcked reads every acknowledged version back from the stream (via a
// control plane's store) and returns those missing or different.
func (h *harness) verifyAcked(ctx context.Context, commits []commitRec) ([]uint64, error) {
	var store *config.Store
	for _, cp := range h.cps {
		if s, _ := cp.current(); s != nil {
			store = s
			break
		}
	}
	if store == nil {
		return nil, fmt.Errorf("no control plane running to read the stream")
	}
	var lost []uint64
	for _, c := range commits {
		var cs *config.Changeset
		var err error
		for try := 0; try < 20; try++ {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			cs, err = store.Changeset(cctx, Env, c.Version)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil || cs.Hash != c.Hash || len(cs.Changes) != 1 || !bytes.Equal(cs.Changes[0].Definition, c.Def) {
			lost = append(lost, c.Version)
		}
	}
	return lost, nil
}

// burst commits BurstCommits changes back to back.
func (h *harness) burst(ctx context.Context) (*ScenarioResult, error) {
	sr := &ScenarioResult{Name: ScenarioBurst, Description: fmt.Sprintf("%d commits back to back", h.o.BurstCommits)}
	h.progress("burst: %s", sr.Description)
	w := h.begin()
	var commits []commitRec
	for range h.o.BurstCommits {
		sr.Commits++
		c, err := h.commit(ctx)
		if err != nil {
			sr.Failed++
			if sr.FirstError == "" {
				sr.FirstError = err.Error()
			}
			continue
		}
		sr.Acked++
		commits = append(commits, c)
	}
	last := time.Now()
	sr.BurstMs = ms(last.Sub(w.start))
	sr.setConvergence(h.converge(ctx, h.head.Load(), last), "last commit acknowledged")
	h.fill(sr, h.end(w))
	h.delays(w.start, commits, sr)
	return sr, h.check(sr)
}

func (sr *ScenarioResult) setConvergence(c convergence, from string) {
	sr.ConvergeMs, sr.NotConverged, sr.AllPushMs, sr.NotInPush, sr.ConvergedFrom = ms(c.head), c.behind, ms(c.push), c.notPush, from
}
