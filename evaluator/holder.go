package evaluator

import "sync/atomic"

// Holder keeps the snapshot being served and tells waiters when it changes.
// Readers never lock: Current is one atomic load. Store is for the single
// owner that builds new snapshots (a file watcher, the sync client).
type Holder struct {
	cur atomic.Pointer[holderState]
}

type holderState struct {
	snap    *Snapshot
	changed chan struct{} // closed when this state is replaced
}

// Current returns the snapshot to serve, or nil before the first Store.
func (h *Holder) Current() *Snapshot {
	if st := h.cur.Load(); st != nil {
		return st.snap
	}
	return nil
}

// Changed returns a channel that is closed the next time Store replaces the
// current snapshot. Call Current after it closes, then Changed again.
func (h *Holder) Changed() <-chan struct{} {
	for {
		st := h.cur.Load()
		if st != nil {
			return st.changed
		}
		// First use before any Store: install an empty state to wait on.
		empty := &holderState{changed: make(chan struct{})}
		if h.cur.CompareAndSwap(nil, empty) {
			return empty.changed
		}
	}
}

// Store makes s the current snapshot and wakes everyone waiting on Changed.
func (h *Holder) Store(s *Snapshot) {
	next := &holderState{snap: s, changed: make(chan struct{})}
	prev := h.cur.Swap(next)
	if prev != nil {
		close(prev.changed)
	}
}
