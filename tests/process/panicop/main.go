// Command panicop is a test operator for tests/process, never shipped: the reference
// operator's KeyedAggregator run by pkg/operator, except that its Apply panics on every
// event of the key "poison". It answers cairn.op.<job>.<instance>.state as `cairn
// operator` does, logs JSON as the services do, and serves /healthz failing while the
// runtime's processing is stopped (Runtime.Health).
//
//	panicop --job J --instance I [--output S] [--on-poison dead-letter|stop] [--health-addr H]
//
// It connects to $NATS_URL; SIGTERM stops it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/health"
	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

// PoisonKey is the key whose events make Apply panic.
const PoisonKey = "poison"

// panicky is a KeyedAggregator whose Apply panics on events of PoisonKey before it
// changes anything.
type panicky struct{ *refop.KeyedAggregator }

func (p panicky) Apply(rec op.Record, st *state.Store) error {
	if bytes.Contains(rec.Data, []byte(`"`+PoisonKey+`"`)) {
		panic("panicop: poison record")
	}
	return p.KeyedAggregator.Apply(rec, st)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "panicop:", err)
		os.Exit(1)
	}
}

func run() error {
	job := flag.String("job", "", "job")
	instance := flag.String("instance", "", "instance")
	output := flag.String("output", "", "output subject; empty: none")
	onPoison := flag.String("on-poison", "", "dead-letter or stop")
	healthAddr := flag.String("health-addr", "", "serve /healthz here; empty: off")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	log := zerolog.New(os.Stderr).With().Timestamp().Str("service", "panicop").Logger()

	policy, err := op.ParsePoisonPolicy(*onPoison)
	if err != nil {
		return err
	}
	nc, err := cairnjs.Connect(cairnjs.ConnectOptionsFromEnv("panicop-" + *instance))
	if err != nil {
		return err
	}
	defer nc.Close()
	agg := &refop.KeyedAggregator{}
	agg.EmitTo(*output)
	keyed, err := op.NewKeyed(panicky{agg}, op.KeyedConfig{})
	if err != nil {
		return err
	}
	cfg := op.DefaultConfig(*job, *instance)
	cfg.OnPoison = policy
	cfg.Logger = zlog.New(log)
	rt, err := op.New(nc, cfg, keyed)
	if err != nil {
		return err
	}
	subject := cairnjs.Subjects{Prefix: cfg.SubjectPrefix}.OperatorState(*job, *instance)
	if err := rt.AddEndpoint("state", subject, micro.HandlerFunc(func(req micro.Request) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st := messages.OperatorState{Instance: *instance}
		var rerr error
		err := rt.Do(sctx, func() {
			st.Position = rt.Position()
			st.Keys, st.Rejected, rerr = refop.KeyedTotals(keyed.Store())
		})
		if err = errors.Join(err, rerr); err != nil {
			_ = reply.Error(req, "503", err.Error())
			return
		}
		_ = req.RespondJSON(st)
	})); err != nil {
		return err
	}
	if *healthAddr != "" {
		go func() {
			if err := health.Serve(ctx, *healthAddr, rt.Health); err != nil {
				log.Error().Err(err).Msg("health server stopped")
			}
		}()
	}
	return rt.Run(ctx)
}
