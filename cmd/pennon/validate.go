package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pennon-dev/pennon/config"
)

func init() {
	register(command{name: "validate", summary: "check a flag file and print every problem with its JSON path", run: runValidate})
}

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", "pennon validate FILE [FILE...]",
		"Validates flag documents (flagd's JSON format plus pennon's fields). Prints one line per\nproblem as `path: reason` and exits 1, or a one-line summary per valid file and exits 0.", stderr)
	if err := fs.Parse(args); err != nil {
		return exitError{code: 2}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitError{code: 2}
	}
	failed := false
	for _, file := range fs.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintf(stdout, "%s: %v\n", file, err)
			failed = true
			continue
		}
		doc, err := config.Parse(data)
		var ve *config.ValidationError
		switch {
		case errors.As(err, &ve):
			for _, p := range ve.Problems {
				fmt.Fprintf(stdout, "%s: %s\n", file, p)
			}
			fmt.Fprintf(stdout, "%s: %d problem(s)\n", file, len(ve.Problems))
			failed = true
		case err != nil:
			fmt.Fprintf(stdout, "%s: %v\n", file, err)
			failed = true
		default:
			targeted, prereqs := 0, 0
			for _, k := range doc.FlagKeys() {
				f := doc.Flag(k)
				if len(f.Targeting) > 0 {
					targeted++
				}
				prereqs += len(f.Prerequisites)
			}
			fmt.Fprintf(stdout, "%s: %d flags valid (%d with targeting, %d prerequisites)\n", file, doc.Len(), targeted, prereqs)
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}
