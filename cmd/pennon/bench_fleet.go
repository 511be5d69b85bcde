package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/bench/fleet"
)

func init() {
	benchSubcommands["fleet"] = runBenchFleet
}

// runBenchFleet is `pennon bench fleet`: N simulated sidecars (the real
// sync client, no HTTP server) against a 3-node NATS cluster and two
// control-plane replicas, all in this process on loopback.
func runBenchFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench fleet", "pennon bench fleet [--sidecars 2000] [flags]",
		"Starts a 3-node NATS cluster (JetStream, R3 streams) and two control-plane replicas on\n"+
			"loopback, then N simulated sidecars running the real sync client (NATS credentials,\n"+
			"pushed changesets, heartbeats, polling fallback), and runs the scenarios: steady\n"+
			"commits, both control planes restarted, the stream leader's NATS node killed under\n"+
			"load, a burst of commits. Reports commit -> applied, convergence time, control-plane\n"+
			"requests per sidecar per minute and heap per sidecar as a table, JSON and PNG plots.", stderr)
	_ = fs.String("config", "", "YAML file with settings")
	var o fleet.Options
	fs.IntVar(&o.Sidecars, "sidecars", 200, "simulated sidecars (each holds one NATS connection: mind ulimit -n)")
	fs.IntVar(&o.Flags, "flags", 50, "flags in the environment besides the counter the scenarios change")
	fs.IntVar(&o.SteadyCommits, "steady-commits", 30, "steady scenario: commits")
	fs.DurationVar(&o.SteadyEvery, "steady-every", time.Second, "steady scenario: interval between commits")
	fs.DurationVar(&o.Outage, "outage", 10*time.Second, "restart scenario: how long both control planes stay down")
	fs.IntVar(&o.KillCommits, "kill-commits", 30, "kill scenario: commits (the node is stopped after the first third)")
	fs.DurationVar(&o.KillEvery, "kill-every", 200*time.Millisecond, "kill scenario: interval between commits")
	fs.IntVar(&o.BurstCommits, "burst", 100, "burst scenario: commits back to back")
	fs.DurationVar(&o.Heartbeat, "heartbeat", time.Second, "control planes' heartbeat interval")
	fs.IntVar(&o.StartRate, "start-rate", 200, "sidecars started per second")
	fs.DurationVar(&o.ConvergeTimeout, "converge-timeout", 2*time.Minute, "bound on every wait for the fleet to converge")
	scenarios := fs.String("scenarios", strings.Join(fleet.Scenarios, ","), "comma-separated scenarios to run, in order: "+strings.Join(fleet.Scenarios, ", "))
	jsonFile := fs.String("json", "", "write the result as JSON to this file")
	plotDir := fs.String("plot-dir", "", "write PNG plots (delays, sync states, control-plane load per scenario) to this directory")
	logLevel := fs.String("log-level", "", "log the control planes at this level (debug, info, warn, error) on stderr; empty: no logs")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	if o.Sidecars < 1 || o.Sidecars > 20000 {
		return fmt.Errorf("sidecars: must be between 1 and 20000 (got %d)", o.Sidecars)
	}
	for _, s := range strings.Split(*scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Scenarios = append(o.Scenarios, s)
		}
	}
	o.Progress = stderr
	if *logLevel != "" {
		log, err := newLogger("console", *logLevel, stderr)
		if err != nil {
			return err
		}
		o.Logger = log
	}
	res, runErr := fleet.Run(ctx, o)
	if res == nil {
		return runErr
	}
	res.Command = "pennon bench fleet " + strings.Join(args, " ")
	if err := res.WriteTable(stdout); err != nil {
		return err
	}
	if *jsonFile != "" {
		if err := res.WriteJSON(*jsonFile); err != nil {
			return err
		}
	}
	if *plotDir != "" {
		paths, err := res.WritePlots(*plotDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plots: %s\n", strings.Join(paths, ", "))
	}
	return runErr
}
