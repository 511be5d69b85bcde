package flagdgrpc

import (
	"fmt"
	"testing"
)

// TestDepthLimitMatchesOFREP: around the nesting limit, a context OFREP
// takes is taken here and one it refuses is refused.
func TestDepthLimitMatchesOFREP(t *testing.T) {
	h := newDocHolder(t, testFlags)
	c := start(t, Options{Source: h})
	addr := startOFREP(t, h)
	for depth := 13; depth <= 18; depth++ {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			ctx := map[string]any{"plan": "premium"}
			cur := ctx
			for range depth {
				next := map[string]any{}
				cur["n"] = next
				cur = next
			}
			compareWithOFREP(t, c, addr, "color", ctx)
			compareWithOFREP(t, c, addr, "color", map[string]any{"l": []any{ctx}})
		})
	}
}
