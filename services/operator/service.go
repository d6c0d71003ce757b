package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
)

// Names of the reference operator's micro service.
const (
	// ServiceName is the micro service's name, as listed by `nats micro ls`.
	ServiceName = "cairn-operator"
	// ServiceVersion is the micro service's version.
	ServiceVersion = "0.1.0"
	// StateEndpoint is the name of the endpoint answering on Subjects.OperatorState.
	StateEndpoint = "state"
)

// stateTimeout bounds how long a state request waits for the processing goroutine.
const stateTimeout = 5 * time.Second

// Service is the reference operator: an Aggregator driven by a Runtime, with its state
// served as JSON messages.OperatorState on Subjects.OperatorState(job, instance) by the
// micro service "cairn-operator".
type Service struct {
	cfg op.Config
	nc  *nats.Conn
	agg *Aggregator
	rt  *op.Runtime
	log zerolog.Logger
}

// NewService returns the reference operator for the instance cfg names.
func NewService(cfg op.Config, nc *nats.Conn, js jetstream.JetStream, res *cjs.Resources, log zerolog.Logger) (*Service, error) {
	agg := NewAggregator()
	agg.EmitTo(cfg.Output)
	rt, err := op.New(cfg, nc, js, res, agg, log)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: rt.Config(), nc: nc, agg: agg, rt: rt, log: log.With().Str("job", cfg.Job).Str("instance", cfg.Instance).Logger()}, nil
}

// Runtime returns the Runtime driving the Aggregator.
func (s *Service) Runtime() *op.Runtime { return s.rt }

// Run adds the micro service and runs the Runtime until ctx is done (see Runtime.Run),
// then stops the micro service. State requests are answered with 503 until the state is
// restored.
func (s *Service) Run(ctx context.Context) error {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "Cairn reference operator: keyed count and sum of JSON events",
		Metadata:    map[string]string{"job": s.cfg.Job, "instance": s.cfg.Instance, "incarnation": s.rt.Incarnation()},
	})
	if err != nil {
		return fmt.Errorf("add micro service %s: %w", ServiceName, err)
	}
	defer func() {
		if err := svc.Stop(); err != nil {
			s.log.Warn().Err(err).Msg("stop micro service")
		}
	}()
	subject := s.cfg.Subjects.OperatorState(s.cfg.Job, s.cfg.Instance)
	if err := svc.AddEndpoint(StateEndpoint, micro.HandlerFunc(s.handleState), micro.WithEndpointSubject(subject)); err != nil {
		return fmt.Errorf("add endpoint %s on %s: %w", StateEndpoint, subject, err)
	}
	return s.rt.Run(ctx)
}

// State returns the Aggregator's state, read consistently on the processing goroutine.
func (s *Service) State(ctx context.Context) (messages.OperatorState, error) {
	st := messages.OperatorState{Instance: s.cfg.Instance}
	err := s.rt.Do(ctx, func() {
		st.Position = s.rt.Position()
		st.Keys = s.agg.Keys()
		st.Rejected = s.agg.Rejected()
	})
	return st, err
}

func (s *Service) handleState(req micro.Request) {
	select {
	case <-s.rt.Ready():
	default:
		s.respondError(req, "503", "instance "+s.cfg.Instance+" is restoring its state; retry shortly")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	st, err := s.State(ctx)
	if err != nil {
		s.respondError(req, "503", fmt.Sprintf("instance %s cannot answer: %v", s.cfg.Instance, err))
		return
	}
	if err := req.RespondJSON(st); err != nil {
		s.log.Warn().Err(err).Msg("respond to state request")
	}
}

func (s *Service) respondError(req micro.Request, code, description string) {
	body, _ := json.Marshal(messages.ErrorBody{Error: description})
	if err := req.Error(code, description, body); err != nil {
		s.log.Warn().Err(err).Msg("respond to state request")
	}
}
