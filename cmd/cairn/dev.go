package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/loadgen"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/embedded"
	"github.com/cairn-stream/cairn/services/aggregator"
	"github.com/cairn-stream/cairn/services/configsvc"
	"github.com/cairn-stream/cairn/services/coordinator"
)

// runDev runs the whole of Cairn in one process on an embedded NATS server.
func runDev(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn dev", flag.ContinueOnError)
	store := fs.String("store", os.Getenv("CAIRN_STORE"), "JetStream store directory; empty: a temporary one removed at exit [$CAIRN_STORE]")
	host := fs.String("host", "127.0.0.1", "address the embedded NATS server listens on")
	port := fs.Int("port", envInt("CAIRN_PORT", 4222), "port the embedded NATS server listens on [$CAIRN_PORT]")
	job := fs.String("job", "demo", "name of the demo job the reference operators run")
	operators := fs.Int("operators", 3, "reference operator instances of the demo job (counter-0 …), fed by a load generator, all jobs' snapshots in one store CAIRN_SNAPSHOTS; 0: neither, only NATS, configsvc and a coordinator, each job's snapshots in its own store CAIRN_SNAPSHOTS_<job>")
	rate := fs.Float64("rate", 5, "input events per second per reference operator")
	logLevel := fs.String("log-level", os.Getenv("LOG_LEVEL"), "trace, debug, info, warn or error [$LOG_LEVEL]")
	maxBytesFlag := registerSnapshotMaxBytes(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	maxBytes, err := parseSize("snapshot-max-bytes", *maxBytesFlag)
	if err != nil {
		return err
	}
	log, err := newLogger(*logLevel, true, stderr)
	if err != nil {
		return err
	}
	if *operators < 0 || *operators > 64 {
		return fmt.Errorf("--operators %d is out of range; allowed: 0 (no demo job) to 64", *operators)
	}
	dir := *store
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cairn-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	start := time.Now()
	srv, err := embedded.Start(embedded.Options{Host: *host, Port: *port, StoreDir: dir})
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	url := srv.ClientURL()
	log.Info().Str("url", url).Str("store", dir).Msg("embedded NATS with JetStream running")

	conn := func(name string) (*nats.Conn, jetstream.JetStream, error) {
		nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: url, Name: name})
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return nc, js, nil
	}
	nc, js, err := conn("cairn-dev")
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := ensureResources(ctx, js, cairnjs.Options{}, log)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	var started []string
	spawn := func(name string, run func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log zerolog.Logger) error) error {
		snc, sjs, err := conn(name)
		if err != nil {
			return err
		}
		slog := log.With().Str("service", name).Logger()
		started = append(started, name)
		wg.Go(func() {
			defer drain(snc)
			if err := run(ctx, snc, sjs, slog); err != nil {
				errOnce.Do(func() { firstErr = fmt.Errorf("%s: %w", name, err) })
				cancel()
			}
		})
		return nil
	}
	instances := make([]string, *operators)
	for i := range instances {
		instances[i] = fmt.Sprintf("counter-%d", i)
	}
	err = spawn("configsvc", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log zerolog.Logger) error {
		svc, err := configsvc.New(configsvc.DefaultConfig(), nc, js, res.Config, log)
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
	if err == nil {
		err = spawn("coordinator", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log zerolog.Logger) error {
			cfg := coordinator.DefaultConfig()
			cfg.Snapshots.SnapshotMaxBytes = maxBytes
			// With the demo job, one store, CAIRN_SNAPSHOTS, plain on loopback, which the
			// reference operators use too. With no demo operator, each job's own store
			// (CAIRN_SNAPSHOTS_<job>), as pkg/operator's DefaultConfig and a deployment do, so
			// that an operator of one's own runs against it unchanged.
			cfg.Snapshots.SharedSnapshotStore = len(instances) > 0
			svc, err := coordinator.New(cfg, nc, js, res, log)
			if err != nil {
				return err
			}
			return svc.Run(ctx)
		})
	}
	for _, inst := range instances {
		if err != nil {
			break
		}
		err = spawn(inst, func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log zerolog.Logger) error {
			cfg := aggregator.DefaultConfig(*job, inst)
			cfg.Output = cairnjs.Subjects{}.Output(*job, inst)
			cfg.SharedSnapshotStore = true
			svc, err := aggregator.NewService(cfg, nc, log)
			if err != nil {
				return err
			}
			return svc.Run(ctx)
		})
	}
	if err == nil && len(instances) > 0 {
		err = spawn("loadgen", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log zerolog.Logger) error {
			cfg := loadgen.DefaultConfig(*job, instances...)
			cfg.Rate = *rate
			return loadgen.Run(ctx, cfg, js, log)
		})
	}
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	up := log.Info().Dur("startup", time.Since(start)).Str("services", strings.Join(started, ","))
	if len(instances) == 0 {
		up.Msgf("Cairn dev is up, with no demo job. Try: nats -s %s micro ls", url)
	} else {
		up.Str("job", *job).Msgf(
			"Cairn dev is up. Try: nats -s %s req cairn.config.set.%s '{\"interval\":\"2s\"}'   ·   nats -s %s req cairn.status.%s ''",
			url, *job, url, *job)
	}
	<-ctx.Done()
	log.Info().Msg("stopping")
	wg.Wait()
	return firstErr
}
