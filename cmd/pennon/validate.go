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

// validation is one file's verdict; `pennon validate --json` prints a list
// of them.
type validation struct {
	File          string          `json:"file"`
	Valid         bool            `json:"valid"`
	Flags         int             `json:"flags,omitempty"`
	Targeted      int             `json:"withTargeting,omitempty"`
	Prerequisites int             `json:"prerequisites,omitempty"`
	Problems      []problemOutput `json:"problems,omitempty"`
	// Error is why the file could not be checked at all (unreadable, not JSON).
	Error string `json:"error,omitempty"`
}

type problemOutput struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", "pennon validate [--json] FILE [FILE...]",
		"Validates flag documents (flagd's JSON format plus pennon's fields). Prints one line per\nproblem as `file: path: reason` and exits 1, or a one-line summary per valid file and exits 0.", stderr)
	asJSON := fs.Bool("json", false, "print the verdicts as JSON instead of lines")
	files, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usagef("which file? pennon validate FILE [FILE...]")
	}
	var out []validation
	failed := false
	for _, file := range files {
		v := validateFile(file)
		failed = failed || !v.Valid
		out = append(out, v)
	}
	err = output{w: stdout, json: *asJSON}.emit(map[string]any{"files": out}, func(w io.Writer) error {
		for _, v := range out {
			switch {
			case v.Error != "":
				fmt.Fprintf(w, "%s: %s\n", v.File, v.Error)
			case !v.Valid:
				for _, p := range v.Problems {
					fmt.Fprintf(w, "%s: %s: %s\n", v.File, p.Path, p.Reason)
				}
				fmt.Fprintf(w, "%s: %d problem(s)\n", v.File, len(v.Problems))
			default:
				fmt.Fprintf(w, "%s: %d flags valid (%d with targeting, %d prerequisites)\n", v.File, v.Flags, v.Targeted, v.Prerequisites)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

func validateFile(file string) validation {
	v := validation{File: file}
	data, err := os.ReadFile(file)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	doc, err := config.Parse(data)
	var ve *config.ValidationError
	switch {
	case errors.As(err, &ve):
		for _, p := range ve.Problems {
			v.Problems = append(v.Problems, problemOutput{Path: p.Path, Reason: p.Reason})
		}
	case err != nil:
		v.Error = err.Error()
	default:
		v.Valid, v.Flags = true, doc.Len()
		for _, k := range doc.FlagKeys() {
			f := doc.Flag(k)
			if len(f.Targeting) > 0 {
				v.Targeted++
			}
			v.Prerequisites += len(f.Prerequisites)
		}
	}
	return v
}
