package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `cairn: distributed, consistent checkpoints on NATS JetStream

Usage:
  cairn dev          run NATS, configsvc, coordinator, 3 operators and a load generator in one process
                     (--operators 0: no demo job, only NATS, configsvc and coordinator)
  cairn configsvc    serve cairn.config.set.<job> / cairn.config.get.<job>
  cairn coordinator  trigger and track checkpoints (--jobs a,b to restrict)
  cairn operator     run a reference operator (--job J --instance I)
  cairn loadgen      publish input events for reference operators
  cairn health       probe a service's health endpoint (exit 0 when healthy)
  cairn auth         generate the NATS users, permissions, nkeys and TLS certificates of a deployment

Run 'cairn <command> -h' for the flags; every flag also reads an environment variable.

Exit status: 0 after a clean stop (SIGTERM, Ctrl-C), 2 for a usage error, 1 for any other
error. An operator exits 1 with an ERROR log line naming the job, the instance and the cause
when it refuses to start (a member with no usable snapshot: --reset-state; input after its
restored position possibly removed: --accept-input-gap; the checkpoint --restore-from names
is gone; its Restore panicked) or was replaced by a newer process with the same instance id.
A record it cannot process is dead-lettered and skipped (--on-poison stop: it stops there
and stays up, unhealthy).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// commands maps each subcommand to its entry point.
var commands = map[string]func(ctx context.Context, args []string, stderr io.Writer) error{
	"dev":         runDev,
	"configsvc":   runConfigsvc,
	"coordinator": runCoordinator,
	"operator":    runOperator,
	"loadgen":     runLoadgen,
	"health":      runHealth,
	"auth":        runAuth,
}

// run dispatches to a subcommand and turns its error into an exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usage)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "cairn: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, args[1:], stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0 // stopped by a signal while still starting
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "cairn %s: %v\n", args[0], err)
	return 1
}

// errUsage marks a flag parsing error already reported by the flag set.
var errUsage = errors.New("usage")
