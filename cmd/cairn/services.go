package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/loadgen"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/services/aggregator"
	"github.com/cairn-stream/cairn/services/configsvc"
	"github.com/cairn-stream/cairn/services/coordinator"
)

func runConfigsvc(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn configsvc", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, false, stderr)
	if err != nil {
		return err
	}
	log = log.With().Str("service", "configsvc").Logger()
	nc, js, res, err := c.setup(ctx, "cairn-configsvc", false, nil, log)
	if err != nil {
		return err
	}
	defer drain(nc)
	svc, err := configsvc.New(configsvc.Config{Subjects: c.subjects()}, nc, js, res.Config, log)
	if err != nil {
		return err
	}
	c.serveHealth(ctx, nc, log)
	return svc.Run(ctx)
}

func runCoordinator(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn coordinator", flag.ContinueOnError)
	var c common
	c.register(fs)
	jobs := fs.String("jobs", os.Getenv("CAIRN_JOBS"), "coordinate only these jobs, comma-separated; empty: every job [$CAIRN_JOBS]")
	trim := fs.String("trim-streams", os.Getenv("CAIRN_TRIM_STREAMS"), "streams besides CAIRN_INPUT in which to trim each member's input below the oldest retained checkpoint, comma-separated [$CAIRN_TRIM_STREAMS]")
	maxBytes := registerSnapshotMaxBytes(fs)
	shared, err := registerSharedSnapshotStore(fs)
	if err != nil {
		return err
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	snapshotMaxBytes, err := parseSize("snapshot-max-bytes", *maxBytes)
	if err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, false, stderr)
	if err != nil {
		return err
	}
	log = log.With().Str("service", "coordinator").Logger()
	cfg := coordinator.DefaultConfig()
	cfg.Subjects = c.subjects()
	cfg.Jobs = splitList(*jobs)
	cfg.TrimStreams = splitList(*trim)
	cfg.Snapshots = cairnjs.Options{Replicas: c.replicas, SnapshotMaxBytes: snapshotMaxBytes, SharedSnapshotStore: *shared}
	if err := cfg.Validate(); err != nil {
		return err
	}
	nc, js, res, err := c.setup(ctx, "cairn-coordinator", false, nil, log)
	if err != nil {
		return err
	}
	defer drain(nc)
	svc, err := coordinator.New(cfg, nc, js, res, log)
	if err != nil {
		return err
	}
	c.serveHealth(ctx, nc, log)
	return svc.Run(ctx)
}

func runOperator(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn operator", flag.ContinueOnError)
	var c common
	c.register(fs)
	job := fs.String("job", os.Getenv("CAIRN_JOB"), "job name [$CAIRN_JOB]")
	instance := fs.String("instance", os.Getenv("CAIRN_INSTANCE"), "stable instance id, e.g. counter-0 [$CAIRN_INSTANCE]")
	inputStream := fs.String("input-stream", envOr("CAIRN_INPUT_STREAM", cairnjs.InputStream), "stream the input is read from [$CAIRN_INPUT_STREAM]")
	input := fs.String("input", os.Getenv("CAIRN_INPUT_SUBJECT"), "input subject filters of the input stream, comma-separated; empty: <prefix>.input.<job>.<instance> [$CAIRN_INPUT_SUBJECT]")
	restoreFrom := fs.String("restore-from", os.Getenv("CAIRN_RESTORE_FROM"), "restore this checkpoint id or savepoint name instead of the newest checkpoint, and resume the input at its positions; refused when it, this instance's snapshot in it or its input is gone. Use for one start only [$CAIRN_RESTORE_FROM]")
	output := fs.String("output", os.Getenv("CAIRN_OUTPUT_SUBJECT"), "emit each key's new totals on this subject (e.g. <prefix>.output.<job>.<instance>); empty: no output [$CAIRN_OUTPUT_SUBJECT]")
	onPoison := fs.String("on-poison", envOr("CAIRN_ON_POISON", string(op.PoisonDeadLetter)), "what to do with a record that cannot be processed (the operator panics on it, or an output of it can never be stored): dead-letter (write it to CAIRN_DEADLETTER and skip it) or stop (stop processing, stay up and unhealthy) [$CAIRN_ON_POISON]")
	resetDefault, err := envBool("CAIRN_RESET_STATE")
	if err != nil {
		return err
	}
	gapDefault, err := envBool("CAIRN_ACCEPT_INPUT_GAP")
	if err != nil {
		return err
	}
	reemitDefault, err := envBool("CAIRN_REEMIT_OUTPUTS")
	if err != nil {
		return err
	}
	reemit := fs.Bool("reemit-outputs", reemitDefault, "publish again, on purpose, the outputs of the replayed input that the output stream already holds (new code after an upgrade), under new message ids; logged and recorded as a member event. Without it they are not published again. Use for one start only [$CAIRN_REEMIT_OUTPUTS]")
	shared, err := registerSharedSnapshotStore(fs)
	if err != nil {
		return err
	}
	resetState := fs.Bool("reset-state", resetDefault, "start this member empty on purpose, dropping the state its checkpoints hold, and read the input from the start of what remains; logged and recorded as a member event. Use for one start only [$CAIRN_RESET_STATE]")
	acceptGap := fs.Bool("accept-input-gap", gapDefault, "go on after a restore although input after the restored position may have been removed by the input stream's limits; logged and recorded as a member event [$CAIRN_ACCEPT_INPUT_GAP]")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, false, stderr)
	if err != nil {
		return err
	}
	policy, err := op.ParsePoisonPolicy(*onPoison)
	if err != nil {
		return fmt.Errorf("--on-poison: %w", err)
	}
	cfg := aggregator.DefaultConfig(*job, *instance)
	cfg.SubjectPrefix = c.prefix
	cfg.InputStream = *inputStream
	cfg.InputFilters = splitList(*input)
	cfg.Output = *output
	cfg.ResetState = *resetState
	cfg.AcceptInputGap = *acceptGap
	cfg.RestoreFrom = *restoreFrom
	cfg.ReemitOutputs = *reemit
	cfg.OnPoison = policy
	cfg.SharedSnapshotStore = *shared
	if err := cfg.Validate(); err != nil {
		return err
	}
	log = log.With().Str("service", "operator").Logger()
	// The runtime looks up the streams and buckets it uses itself, waiting while they do
	// not exist yet.
	nc, err := c.connect("cairn-operator-"+*instance, log)
	if err != nil {
		return err
	}
	defer drain(nc)
	svc, err := aggregator.NewService(cfg, nc, log)
	if err != nil {
		return err
	}
	c.serveHealth(ctx, nc, log, svc.Runtime().Health)
	if err := svc.Run(ctx); err != nil {
		logOperatorFailure(log, cfg, err)
		return err
	}
	return nil
}

// logOperatorFailure logs why an operator stopped with an error, at error level, naming
// the job, the instance and the cause.
func logOperatorFailure(log zerolog.Logger, cfg aggregator.Config, err error) {
	msg := "operator failed"
	switch {
	case errors.Is(err, op.ErrNoUsableSnapshot):
		msg = "refusing to start: this member has no usable snapshot (--reset-state starts it empty on purpose)"
	case errors.Is(err, op.ErrInputGap):
		msg = "refusing to start: input after the restored position may have been removed (--accept-input-gap goes on without it)"
	case errors.Is(err, op.ErrRestoreFrom):
		msg = "refusing to start: the checkpoint --restore-from names cannot be restored"
	case errors.Is(err, op.ErrReplaced):
		msg = "stopped: replaced by a newer incarnation of this instance"
	case errors.Is(err, op.ErrPanic):
		msg = "refusing to start: restoring the state panicked (the stack is logged above)"
	}
	log.Error().Str("job", cfg.Job).Str("instance", cfg.Instance).Err(err).Msg(msg)
}

func runLoadgen(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn loadgen", flag.ContinueOnError)
	var c common
	c.register(fs)
	job := fs.String("job", envOr("CAIRN_JOB", "demo"), "job name [$CAIRN_JOB]")
	instances := fs.String("instances", envOr("CAIRN_INSTANCES", "counter-0,counter-1,counter-2"), "instances to feed, comma-separated [$CAIRN_INSTANCES]")
	rate := fs.Float64("rate", 5, "events per second per instance")
	keys := fs.Int("keys", 8, "distinct keys")
	count := fs.Int("count", 0, "stop after this many events per instance; 0: run until stopped")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, false, stderr)
	if err != nil {
		return err
	}
	log = log.With().Str("service", "loadgen").Logger()
	cfg := loadgen.Config{Subjects: c.subjects(), Job: *job, Instances: splitList(*instances), Rate: *rate, Keys: *keys, Count: *count}
	if err := cfg.Validate(); err != nil {
		return err
	}
	nc, js, _, err := c.setup(ctx, "cairn-loadgen", true, []string{cairnjs.InputStream}, log)
	if err != nil {
		return err
	}
	defer drain(nc)
	c.serveHealth(ctx, nc, log)
	return loadgen.Run(ctx, cfg, js, log)
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
