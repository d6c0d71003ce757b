package main

import (
	"context"
	"flag"
	"io"
	"os"
	"strings"

	"github.com/cairn-stream/cairn/internal/loadgen"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/services/configsvc"
	"github.com/cairn-stream/cairn/services/coordinator"
	"github.com/cairn-stream/cairn/services/operator"
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
	if err := parse(fs, args, stderr); err != nil {
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
	input := fs.String("input", os.Getenv("CAIRN_INPUT_SUBJECT"), "input subject; empty: <prefix>.input.<job>.<instance> [$CAIRN_INPUT_SUBJECT]")
	output := fs.String("output", os.Getenv("CAIRN_OUTPUT_SUBJECT"), "emit each key's new totals on this subject (e.g. <prefix>.output.<job>.<instance>); empty: no output [$CAIRN_OUTPUT_SUBJECT]")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, false, stderr)
	if err != nil {
		return err
	}
	cfg := operator.DefaultConfig(*job, *instance)
	cfg.Subjects = c.subjects()
	if *input != "" {
		cfg.InputSubject = *input
	}
	cfg.Output = *output
	if err := cfg.Validate(); err != nil {
		return err
	}
	log = log.With().Str("service", "operator").Logger()
	nc, js, res, err := c.setup(ctx, "cairn-operator-"+*instance, true, operator.Resources(), log)
	if err != nil {
		return err
	}
	defer drain(nc)
	svc, err := operator.NewService(cfg, nc, js, res, log)
	if err != nil {
		return err
	}
	c.serveHealth(ctx, nc, log)
	return svc.Run(ctx)
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
	nc, js, _, err := c.setup(ctx, "cairn-loadgen", true, []string{cjs.InputStream}, log)
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
