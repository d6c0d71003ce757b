package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
)

// StateEndpoint is the name of the endpoint answering on cairnjs.Subjects.OperatorState, added to
// the runtime's micro service (op.ServiceName).
const StateEndpoint = "state"

// stateTimeout bounds how long a state request waits for the processing goroutine.
const stateTimeout = 5 * time.Second

// Service is the reference operator: a KeyedAggregator on the keyed state store
// (op.Keyed, checkpointed incrementally) driven by a pkg/operator Runtime, with its state
// served as JSON messages.OperatorState on cairnjs.Subjects.OperatorState(job, instance) next to
// the runtime's info endpoint.
type Service struct {
	cfg   Config
	keyed op.Keyed
	rt    *op.Runtime
	log   zerolog.Logger
}

// emitless hides the KeyedAggregator's Producer method when it emits nothing, so that
// the runtime does not wait for an output stream it will never use.
type emitless struct{ op.KeyedMachine }

// NewService returns the reference operator for the instance cfg names. The runtime logs
// through log (bridged to slog by internal/zlog), in place of cfg.Logger.
func NewService(cfg Config, nc *nats.Conn, log zerolog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	agg := &KeyedAggregator{}
	agg.EmitTo(cfg.Output)
	var m op.KeyedMachine = agg
	if cfg.Output == "" {
		m = emitless{agg}
	}
	keyed, err := op.NewKeyed(m, op.KeyedConfig{})
	if err != nil {
		return nil, err
	}
	rcfg := cfg.Config
	rcfg.Logger = zlog.New(log)
	rt, err := op.New(nc, rcfg, keyed)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, keyed: keyed, rt: rt, log: log.With().Str("job", cfg.Job).Str("instance", cfg.Instance).Logger()}
	s.cfg.Config = rt.Config()
	subject := cairnjs.Subjects{Prefix: cfg.SubjectPrefix}.OperatorState(cfg.Job, cfg.Instance)
	if err := rt.AddEndpoint(StateEndpoint, subject, micro.HandlerFunc(s.handleState)); err != nil {
		return nil, err
	}
	return s, nil
}

// Runtime returns the Runtime driving the KeyedAggregator.
func (s *Service) Runtime() *op.Runtime { return s.rt }

// Run runs the Runtime, which serves the state endpoint, until ctx is done (see
// op.Runtime.Run). State requests are answered with 503 until the state is restored.
func (s *Service) Run(ctx context.Context) error { return s.rt.Run(ctx) }

// State returns the KeyedAggregator's state, read consistently on the processing
// goroutine.
func (s *Service) State(ctx context.Context) (messages.OperatorState, error) {
	st := messages.OperatorState{Instance: s.cfg.Instance}
	var rerr error
	err := s.rt.Do(ctx, func() {
		st.Position = s.rt.Position()
		st.Keys, st.Rejected, rerr = KeyedTotals(s.keyed.Store())
	})
	if err == nil {
		err = rerr
	}
	return st, err
}

func (s *Service) handleState(req micro.Request) {
	select {
	case <-s.rt.Ready():
	default:
		s.respondError(req, reply.Unavailable, "instance "+s.cfg.Instance+" is restoring its state; retry shortly")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	st, err := s.State(ctx)
	if err != nil {
		s.respondError(req, reply.Unavailable, fmt.Sprintf("instance %s cannot answer: %v", s.cfg.Instance, err))
		return
	}
	if err := req.RespondJSON(st); err != nil {
		s.log.Warn().Err(err).Msg("respond to state request")
	}
}

func (s *Service) respondError(req micro.Request, code, description string) {
	if err := reply.Error(req, code, description); err != nil {
		s.log.Warn().Err(err).Msg("respond to state request")
	}
}
