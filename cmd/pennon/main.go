// Command pennon is the one binary of pennon: the sidecar, the control plane,
// the all-in-one dev mode, the bench suite and the admin CLI.
//
// Each subcommand lives in its own file and registers itself in init with
// register, so subcommands can be added without touching this file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string // one line for `pennon --help`
	// run executes the command with its arguments (after the name). It writes
	// normal output to stdout and diagnostics to stderr. A returned
	// exitError sets the exit status; any other error prints and exits 1.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("pennon: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// exitError carries an exit status without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// `pennon help CMD` is `pennon CMD --help`.
	if len(args) > 1 && args[0] == "help" {
		args = []string{args[1], "--help"}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pennon: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	// Asked-for help is output, not a diagnostic: `pennon flags --help | less`.
	cmdErr := stderr
	for _, a := range args[1:] {
		if a == "-h" || a == "-help" || a == "--help" {
			cmdErr = stdout
		}
	}
	err := c.run(ctx, args[1:], stdout, cmdErr)
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pennon %s: %v\nRun `pennon %s --help` for its verbs and flags.\n", c.name, err, c.name)
		return 2
	default:
		fmt.Fprintf(stderr, "pennon %s: %v\n", c.name, err)
		return 1
	}
}

func usage(w io.Writer) {
	names := make([]string, 0, len(commands))
	width := 0
	for n := range commands {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("pennon — feature flags evaluated locally, in a sidecar next to your app.\n\n")
	b.WriteString("Usage: pennon <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, n, commands[n].summary)
	}
	b.WriteString("\nRun `pennon <command> --help` for a command's flags.\n")
	io.WriteString(w, b.String())
}
