package configsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Name and description of the micro service, as `nats micro ls` shows them (its version is
// messages.ServiceVersion).
const (
	ServiceName        = "cairn-config"
	ServiceDescription = "Cairn checkpoint config: versioned merge-patch set and get per job"
)

// Time limits of the service's work.
const (
	// opTimeout bounds one JetStream read or publish.
	opTimeout = 2 * time.Second
	// requestTimeout bounds all the work for one request, retries included.
	requestTimeout = 15 * time.Second
)

// ErrMissingDependency is returned (wrapped) by New when a connection, JetStream context
// or stream is nil.
var ErrMissingDependency = errors.New("configsvc: missing dependency")

// consumerCreator creates a consumer of the config stream; jetstream.Stream implements it.
type consumerCreator interface {
	CreateConsumer(ctx context.Context, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
}

// publisher publishes a config event to JetStream and waits for its acknowledgement.
type publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Service is the cairn-config micro service. Create it with New and serve with Run.
type Service struct {
	cfg  Config
	nc   *nats.Conn
	pub  publisher
	last configlog.Reader
	// consumers reads a job's history in one pass.
	consumers consumerCreator
	// stream is the config stream's name; publishes expect it, so that a subject bound to
	// another stream is an error rather than a silent write elsewhere.
	stream string
	log    zerolog.Logger
	now    func() time.Time
	// handlers is held for reading by every running handler; Run takes it for writing
	// after stopping the micro service, to wait for them.
	handlers sync.RWMutex
	// skipped logs each invalid config event once.
	skipped configlog.SkipLog
}

// New returns a service that stores config events in stream (the CAIRN_CONFIG stream of
// cairnjs.Resources) through js, and serves requests on nc once Run is called.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, log zerolog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || js == nil || stream == nil {
		return nil, fmt.Errorf("%w: New needs a connection, a JetStream context and the config stream", ErrMissingDependency)
	}
	var name string
	if info := stream.CachedInfo(); info != nil {
		name = info.Config.Name
	}
	return &Service{
		cfg:       cfg,
		nc:        nc,
		pub:       js,
		last:      stream,
		consumers: stream,
		stream:    name,
		log:       log.With().Str("service", ServiceName).Logger(),
		now:       time.Now,
	}, nil
}

// Run registers the micro service with its "set", "get" and "history" endpoints and serves until
// ctx is done; then it stops the micro service, draining its subscriptions, and returns
// nil once the server has stopped sending it requests and the handlers that were running
// have finished. Requests delivered before the stop are still answered while the drain
// completes; close the connection with nc.Drain to wait for them. Run returns an error
// only when the service cannot be registered.
func (s *Service) Run(ctx context.Context) error {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     messages.ServiceVersion,
		Description: ServiceDescription,
		Metadata:    map[string]string{"prefix": s.prefix()},
	})
	if err != nil {
		return fmt.Errorf("add micro service %s: %w", ServiceName, err)
	}
	// Requests already accepted finish even when ctx ends: they get their own deadline.
	reqCtx := context.WithoutCancel(ctx)
	endpoints := []struct {
		name, subject, description string
		handle                     func(context.Context, micro.Request)
	}{
		{"set", s.cfg.Subjects.ConfigSet(">"), "merge-patch a job's config; JSON body, msgpack with Content-Type " + messages.ContentTypeMsgpack, s.handleSet},
		{"get", s.cfg.Subjects.ConfigGet(">"), "the config in force for a job and its version", s.handleGet},
		{"history", s.cfg.Subjects.ConfigHistory(">"), "every config version of a job, oldest first", s.handleHistory},
	}
	for _, e := range endpoints {
		err := svc.AddEndpoint(e.name, micro.ContextHandler(reqCtx, e.handle),
			micro.WithEndpointSubject(e.subject),
			micro.WithEndpointMetadata(map[string]string{"description": e.description}))
		if err != nil {
			s.stop(svc)
			return fmt.Errorf("add endpoint %s on %s: %w", e.name, e.subject, err)
		}
	}
	s.log.Info().Str("set", s.cfg.Subjects.ConfigSet("<job>")).Str("get", s.cfg.Subjects.ConfigGet("<job>")).
		Str("id", svc.Info().ID).Msg("serving")
	<-ctx.Done()
	s.stop(svc)
	s.log.Info().Msg("stopped")
	return nil
}

// stop stops the micro service, flushes so that the server has dropped its interest
// before stop returns, and waits for the running handlers: taking handlers for writing
// waits until no handler holds it for reading.
func (s *Service) stop(svc micro.Service) {
	if err := svc.Stop(); err != nil {
		s.log.Warn().Err(err).Msg("stop micro service")
	}
	if err := s.nc.FlushTimeout(opTimeout); err != nil {
		s.log.Debug().Err(err).Msg("flush after stop")
	}
	s.handlers.Lock()
	s.handlers.Unlock()
}

func (s *Service) prefix() string {
	return strings.TrimSuffix(s.cfg.Subjects.ConfigSet(""), ".config.set.")
}
