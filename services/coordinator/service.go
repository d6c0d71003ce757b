package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/lograte"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
	"github.com/cairn-stream/cairn/services/coordinator/internal/store"
)

// ServiceName is the micro service name of the coordinator.
const ServiceName = "cairn-coordinator"

// Config configures a coordinator.
type Config struct {
	// Subjects gives the subject prefix.
	Subjects cairnjs.Subjects
	// Jobs restricts the coordinator to these jobs; empty means every job that has a
	// config or a registered instance.
	Jobs []string
	// ID identifies this coordinator process in leases, barriers and status; empty means
	// a new unique id.
	ID string
	// TrimStreams names streams besides CAIRN_INPUT (which is always trimmed) in which the
	// coordinator trims each member's input subjects below the oldest retained checkpoint
	// that holds it. The coordinator's NATS user needs $JS.API.STREAM.INFO.<stream> and
	// $JS.API.STREAM.PURGE.<stream> on each.
	TrimStreams []string
	// Snapshots is what the coordinator creates each job's snapshot store
	// (cairnjs.SnapshotStore) with, before the job's first barrier: Replicas, Memory and
	// SnapshotMaxBytes (the other fields do not apply).
	Snapshots cairnjs.Options
}

// DefaultConfig returns a config coordinating every job.
func DefaultConfig() Config { return Config{} }

// Validate checks the job and stream names.
func (c Config) Validate() error {
	for _, j := range c.Jobs {
		if err := messages.ValidateName("job", j); err != nil {
			return err
		}
	}
	for _, st := range c.TrimStreams {
		if st == "" || strings.ContainsAny(st, ".*> \t/\\") {
			return fmt.Errorf("trim stream %q: not a stream name (no dots, wildcards, spaces or slashes)", st)
		}
	}
	return nil
}

// trimStreams are the streams trimmed: CAIRN_INPUT and Config.TrimStreams.
func (c Config) trimStreams() []string {
	out := []string{cairnjs.InputStream}
	for _, st := range c.TrimStreams {
		if !slices.Contains(out, st) {
			out = append(out, st)
		}
	}
	return out
}

// Service coordinates checkpoints of every job it sees.
type Service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	// async publishes the completed events without waiting for their acks; a failure
	// (an error or no ack within loop.CallCap) is logged by eventFailed.
	async jetstream.JetStream
	res   *cairnjs.Resources
	log   zerolog.Logger

	// mu guards jobs and known (the registry only; each job's state is owned by its loop).
	// Lock order: mu before replicas' own mutex, never the other way.
	mu sync.Mutex
	// jobs are the running loops; known is every job seen, running or parked.
	jobs  map[string]*loop.Job
	known map[string]*jobEntry
	wg    sync.WaitGroup
	// ttl is CAIRN_LEASES' TTL, set when Run starts.
	ttl time.Duration
	// replicas are the live coordinator replicas and the store.Placement of jobs on them.
	replicas *replicaSet
	// synced is closed once the registrations have been read (the jobs with an instance
	// run); syncOnce closes it.
	synced   chan struct{}
	syncOnce sync.Once
	// skipped logs each invalid config event once.
	skipped configlog.SkipLog
	// lookups runs one config look-up per job at a time (lookUpConfig).
	lookups lookups
	// retaining holds a slot per retention pass in progress, over every job
	// (retentionSlots).
	retaining chan struct{}
	// noise rate-limits the warnings that input from outside or an outage repeats
	// (loop.NoisePeriod).
	noise *lograte.Limiter
	// faults, when set (tests only), wraps a job's backend and snapshot stores as the job
	// is first seen: fault injection for one job among real ones.
	faults func(job string, b loop.Backend, stores store.Stores) (loop.Backend, store.Stores)
}

// New builds a coordinator; Run starts it.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, res *cairnjs.Resources, log zerolog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ID == "" {
		cfg.ID = nuid.Next()
	}
	log = log.With().Str("coordinator", cfg.ID).Logger()
	s := &Service{
		cfg: cfg, nc: nc, js: js, res: res, log: log, noise: zlog.RateLimited(log, loop.NoisePeriod),
		jobs: map[string]*loop.Job{}, known: map[string]*jobEntry{}, replicas: newReplicaSet(cfg.ID, cfg.Jobs), synced: make(chan struct{}),
		retaining: make(chan struct{}, retentionSlots),
	}
	async, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(loop.CallCap), jetstream.WithPublishAsyncErrHandler(s.eventFailed))
	if err != nil {
		return nil, err
	}
	s.async = async
	return s, nil
}

// eventFailed logs a checkpoint event published asynchronously that JetStream did not
// store.
func (s *Service) eventFailed(_ jetstream.JetStream, m *nats.Msg, err error) {
	const msg = "cannot publish the checkpoint event"
	if !s.noise.Allow(msg) {
		return
	}
	s.log.Error().Err(err).Str("subject", m.Subject).Str("checkpoint", m.Header.Get(messages.HeaderCheckpointID)).
		Msg(msg)
}

// ID returns the coordinator's id.
func (s *Service) ID() string { return s.cfg.ID }

// Run coordinates until ctx is done, then stops its endpoints, aborts pending checkpoints,
// releases its leases and returns nil. It returns an error only when it cannot start; a
// start cut short by ctx ending is a stop (logged, nil), as in the operator runtime.
func (s *Service) Run(ctx context.Context) error {
	err := s.run(ctx)
	if err != nil && ctx.Err() != nil {
		s.log.Info().Err(err).Msg("stopped while starting")
		return nil
	}
	return err
}

func (s *Service) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		s.wg.Wait()
	}()
	status, err := s.res.Leases.Status(ctx)
	if err != nil {
		return fmt.Errorf("read %s status: %w", cairnjs.LeaseBucket, err)
	}
	ttl := status.TTL()
	if ttl <= 0 {
		return fmt.Errorf("bucket %s has no TTL: leases could never expire", cairnjs.LeaseBucket)
	}
	s.ttl = ttl

	// Acks on each instance's own subject, and on the job's subject of operators from
	// before (a rolling upgrade; docs/compatibility.md): of the given jobs only, when
	// restricted, so that a NATS user need not read any other job's.
	ackJobs := s.cfg.Jobs
	if len(ackJobs) == 0 {
		ackJobs = []string{"*"}
	}
	for _, job := range ackJobs {
		for _, subject := range []string{s.cfg.Subjects.InstanceAck(job, "*"), s.cfg.Subjects.Ack(job)} {
			sub, err := s.nc.Subscribe(subject, s.onAck)
			if err != nil {
				return fmt.Errorf("subscribe to acks on %s: %w", subject, err)
			}
			defer func() { _ = sub.Unsubscribe() }()
		}
	}

	regs := store.NewFollow(s.res.Leases, s.nc, cairnjs.RegistrationKey("*", "*"))
	updates, err := regs.Start(ctx)
	if err != nil {
		regs.Close()
		return fmt.Errorf("watch registrations: %w", err)
	}
	s.wg.Go(func() {
		defer regs.Close()
		s.followRegistrations(ctx, regs, updates)
	})
	s.wg.Go(func() { s.runReplica(ctx, ttl, s.synced) })

	// Config events and heads: a head is a copy of the newest event configsvc accepted,
	// on a subject that garbage published on the events subject cannot reach.
	filters := []string{s.cfg.Subjects.ConfigEvents("*"), s.cfg.Subjects.ConfigHead("*")}
	if len(s.cfg.Jobs) > 0 {
		filters = filters[:0]
		for _, j := range s.cfg.Jobs {
			filters = append(filters, s.cfg.Subjects.ConfigEvents(j), s.cfg.Subjects.ConfigHead(j))
		}
	}
	cons, err := s.js.OrderedConsumer(ctx, cairnjs.ConfigStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("follow config events: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { s.onConfig(ctx, m) })
	if err != nil {
		return fmt.Errorf("follow config events: %w", err)
	}
	defer cc.Stop()

	stop, err := s.serveEndpoints(ctx)
	if err != nil {
		return err
	}
	defer stop()
	s.log.Info().Strs("jobs", s.cfg.Jobs).Dur("lease_ttl", ttl).Msg("coordinator running")
	<-ctx.Done()
	s.log.Info().Msg("coordinator stopping")
	return nil
}

// wanted reports whether this coordinator coordinates the job.
func (s *Service) wanted(name string) bool {
	return len(s.cfg.Jobs) == 0 || slices.Contains(s.cfg.Jobs, name)
}

// lookup returns the job's loop, or nil when it has none.
func (s *Service) lookup(name string) *loop.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[name]
}

// start starts the job's loop, lease keeper and retention worker, which run until ctx is
// done; s.mu is held.
func (s *Service) start(ctx context.Context, name string) *loop.Job {
	log := s.log.With().Str("job", name).Logger()
	b := store.NewBackend(store.BackendConfig{
		Job: name, Subjects: s.cfg.Subjects, Conn: s.nc, JS: s.js, Async: s.async, Resources: s.res, Log: log,
	})
	var jb loop.Backend = b
	var stores store.Stores = store.NewJobStores(name, s.js, s.cfg.Snapshots, s.stream)
	if s.faults != nil {
		jb, stores = s.faults(name, b, stores)
	}
	b.SetStores(stores)
	j := loop.New(loop.Config{Job: name, Coordinator: s.cfg.ID, ManifestBytes: s.nc.MaxPayload() / 2}, jb, s.log)
	k := store.NewLeaseKeeper(s.res.Leases, s.nc, name, s.cfg.ID, s.ttl, s.replicas, j.OfferLease, log)
	s.jobs[name] = j
	s.wg.Go(func() { j.Run(ctx) })
	s.wg.Go(func() { k.Run(ctx) })
	trim := store.NewTrimmer(s.cfg.trimStreams(), s.stream, log)
	s.wg.Go(func() { b.RunRetention(ctx, trim, s.retaining) })
	return j
}

// stream looks up a stream to trim.
func (s *Service) stream(ctx context.Context, name string) (store.StreamPurger, error) {
	if name == cairnjs.InputStream && s.res.Input != nil {
		return s.res.Input, nil
	}
	return s.js.Stream(ctx, name)
}

// retentionSlots is how many retention passes of a coordinator's jobs run at once.
const retentionSlots = 4
