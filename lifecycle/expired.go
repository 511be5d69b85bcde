package lifecycle

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pennon-dev/pennon/config"
)

// ExpiredChange is one change of a write that touches an expired flag
// without extending its expiry.
type ExpiredChange struct {
	Index   int    // in the write's changes
	Flag    string // the flag
	Path    string // "changes[i].definition.expires"
	Message string // what is wrong and how to fix it
}

// CheckExpired finds the changes that an environment's expiredFlags rule
// applies to, against doc (the flag set the write applies to):
//   - a put to a flag whose current definition has expired, unless the new
//     definition's expires is after now (the change extends it);
//   - a put whose new definition has already expired (a new flag written
//     expired, or an expired definition brought back by a rollback).
//
// Deletes never count: removing an expired flag is the point of expiring it.
func CheckExpired(doc *config.Document, changes []config.Change, now time.Time) []ExpiredChange {
	var out []ExpiredChange
	suggest := now.Add(30 * day).UTC().Format(time.DateOnly)
	for i, ch := range changes {
		if ch.Op != config.OpPut {
			continue
		}
		var def struct {
			Expires string `json:"expires"`
		}
		_ = json.Unmarshal(ch.Definition, &def)
		next, nextOK := (&config.FlagDoc{Expires: def.Expires}).ExpiresAt()
		extends := nextOK && next.After(now)
		path := fmt.Sprintf("changes[%d].definition.expires", i)
		var cur *config.FlagDoc
		if doc != nil {
			cur = doc.Flag(ch.Flag)
		}
		if cur != nil {
			if exp, ok := cur.ExpiresAt(); ok && !exp.After(now) && !extends {
				out = append(out, ExpiredChange{Index: i, Flag: ch.Flag, Path: path,
					Message: fmt.Sprintf("flag %q expired on %s: extend expires past now (e.g. %q) in the same change, or delete the flag", ch.Flag, cur.Expires, suggest)})
				continue
			}
		}
		if nextOK && !extends {
			out = append(out, ExpiredChange{Index: i, Flag: ch.Flag, Path: path,
				Message: fmt.Sprintf("flag %q would be written already expired (expires %s): set expires after now (e.g. %q)", ch.Flag, def.Expires, suggest)})
		}
	}
	return out
}
