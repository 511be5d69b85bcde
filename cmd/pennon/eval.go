package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/proxy"
)

func init() {
	register(command{name: "eval", summary: "evaluate one flag from a file for a context and print the OFREP answer", run: runEval})
}

func runEval(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval", `pennon eval --file FILE --flag KEY [--context '{"targetingKey":"u1"}']`,
		"Evaluates one flag locally, exactly as the sidecar would, and prints the OFREP JSON answer.", stderr)
	file := fs.String("file", "", "flag document to load (required)")
	flag := fs.String("flag", "", "flag key to evaluate (required)")
	ctxJSON := fs.String("context", "{}", "evaluation context as a JSON object")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	if *file == "" || *flag == "" {
		return fmt.Errorf("--file and --flag are required (see pennon eval --help)")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	doc, err := config.Parse(data)
	if err != nil {
		return fmt.Errorf("%s is invalid:\n%w", *file, err)
	}
	snap, err := doc.Compile(1)
	if err != nil {
		return err
	}
	ec := evaluator.NewContext()
	if err := ec.Decode([]byte(*ctxJSON), evaluator.Limits{}); err != nil {
		var ce *evaluator.ContextError
		if errors.As(err, &ce) {
			return fmt.Errorf("--context: %s", ce.Detail)
		}
		return fmt.Errorf("--context: %w", err)
	}
	r := snap.Evaluate(*flag, ec)
	out := append(proxy.AppendResult(nil, &r), '\n')
	if _, err := stdout.Write(out); err != nil {
		return err
	}
	if r.ErrorCode != evaluator.CodeNone {
		return exitError{code: 1}
	}
	return nil
}
