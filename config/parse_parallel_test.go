package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestParseManyFlagsReportsEveryProblem: large documents are parsed on
// several goroutines; every problem must still be reported, in path order,
// and a valid large document must come out whole.
func TestParseManyFlagsReportsEveryProblem(t *testing.T) {
	build := func(bad map[int]bool) []byte {
		var b strings.Builder
		b.WriteString(`{"flags":{`)
		for i := range 3000 {
			if i > 0 {
				b.WriteByte(',')
			}
			state := "ENABLED"
			if bad[i] {
				state = "ON"
			}
			fmt.Fprintf(&b, `"f%04d":{"state":%q,"variants":{"on":true},"defaultVariant":"on"}`, i, state)
		}
		b.WriteString(`}}`)
		return []byte(b.String())
	}
	doc, err := Parse(build(nil))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Len() != 3000 || doc.FlagKeys()[2999] != "f2999" {
		t.Fatalf("%d flags, last %q", doc.Len(), doc.FlagKeys()[doc.Len()-1])
	}
	_, err = Parse(build(map[int]bool{5: true, 1500: true, 2999: true}))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err %v, want a *ValidationError", err)
	}
	var paths []string
	for _, p := range ve.Problems {
		paths = append(paths, p.Path)
	}
	want := []string{"flags.f0005.state", "flags.f1500.state", "flags.f2999.state"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("problems at %v, want %v:\n%v", paths, want, err)
	}
}
