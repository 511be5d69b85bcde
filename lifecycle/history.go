package lifecycle

import (
	"encoding/json"

	"github.com/pennon-dev/pennon/config"
)

// history is one environment's change facts, folded from its changesets in
// version order and extended as versions are committed, so a report reads
// only the changesets committed since the last one.
type history struct {
	through uint64 // last version folded in
	flags   map[string]*flagHistory
	// everBy maps a flag to the flags that named it as a prerequisite at
	// some version → the last such version.
	everBy map[string]map[string]uint64
}

type flagHistory struct {
	created, last *Change
}

func newHistory() *history {
	return &history{flags: map[string]*flagHistory{}, everBy: map[string]map[string]uint64{}}
}

// fold applies one changeset. Foreign or missing versions carry no
// changes and leave the facts as they were.
func (h *history) fold(cs *config.Changeset) {
	h.through = cs.Version
	c := &Change{Version: cs.Version, Time: cs.Time.UTC(), Author: cs.Author}
	for _, ch := range cs.Changes {
		switch ch.Op {
		case config.OpDelete:
			delete(h.flags, ch.Flag)
		case config.OpPut:
			fh := h.flags[ch.Flag]
			if fh == nil {
				fh = &flagHistory{created: c}
				h.flags[ch.Flag] = fh
			}
			fh.last = c
			var def struct {
				Prerequisites map[string]json.RawMessage `json:"prerequisites"`
			}
			_ = json.Unmarshal(ch.Definition, &def)
			for p := range def.Prerequisites {
				if h.everBy[p] == nil {
					h.everBy[p] = map[string]uint64{}
				}
				h.everBy[p][ch.Flag] = cs.Version
			}
		}
	}
}

// facts returns the facts of the flags in doc (copies: the history keeps
// changing under later folds).
func (h *history) facts(doc *config.Document) map[string]Facts {
	out := make(map[string]Facts, doc.Len())
	for _, k := range doc.FlagKeys() {
		var f Facts
		if fh := h.flags[k]; fh != nil {
			f.Created, f.LastChanged = fh.created, fh.last
		}
		if by := h.everBy[k]; len(by) > 0 {
			f.FormerDependents = make(map[string]uint64, len(by))
			for d, v := range by {
				f.FormerDependents[d] = v
			}
		}
		out[k] = f
	}
	return out
}
