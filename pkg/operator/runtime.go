package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/cairn-stream/cairn/internal/lograte"
	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Errors returned by the Runtime.
var (
	// ErrAlreadyStarted is returned by Run when the Runtime has been run before, and by
	// AddEndpoint once Run was called; a Runtime runs once, a restart is a new Runtime
	// (and a new incarnation).
	ErrAlreadyStarted = errors.New("operator runtime already started")
	// ErrStopped is returned by Do once the processing goroutine has ended, or when Run
	// failed before starting it.
	ErrStopped = errors.New("operator runtime stopped")
)

const (
	// barrierBuffer is how many barriers wait for the processing goroutine.
	barrierBuffer = 64
	// recordBuffer is how many input records wait for the processing goroutine.
	recordBuffer = 256
	// drainTimeout bounds how long Run keeps persisting and acking the snapshots already
	// taken after its context is done; the rest are declined.
	drainTimeout = 10 * time.Second
	// cleanupTimeout bounds the calls Run makes after its context is done.
	cleanupTimeout = 5 * time.Second
)

// orderedConsumers is the part of jetstream.JetStream the runtime uses.
type orderedConsumers interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

// Runtime runs one operator instance; see the package documentation.
type Runtime struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	consumers orderedConsumers
	streams   inputStreams
	outputs   outputPublisher
	// manifests, leases and instances are looked up by Run before anything else uses them;
	// the snapshot stores when a snapshot is stored or restored.
	manifests   manifestReader
	leases      leaseStore
	instances   cairnjs.KVWriter
	stores      *snapshotStores
	m           Machine
	cp          checkpointer
	log         *slog.Logger
	incarnation string
	endpoints   []endpoint

	// restoredCheckpoint and restoredFrom are set by Run before ready is closed.
	restoredCheckpoint uint64
	restoredFrom       string

	started  atomic.Bool
	ready    chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
	doCh     chan doRequest

	// fenced is set, replacedBy written and fencedCh closed, once, when a newer
	// incarnation took over the registration.
	fenced     atomic.Bool
	fenceOnce  sync.Once
	fencedCh   chan struct{}
	replacedBy string

	// lease is this incarnation's own view of its registration: when it was last known to
	// be its own, and the channel on which a publisher asks the heartbeat to confirm it.
	lease selfLease

	position atomic.Uint64
	// halted is set, once, when processing stopped (halt).
	halted atomic.Pointer[messages.OperatorStopped]
	stats  counters
	acks   recentAcks
	// noise rate-limits the warnings that strangers can cause at will (warnNoisy).
	noise *lograte.Limiter
}

// doRequest asks the processing goroutine to run fn and close done.
type doRequest struct {
	fn   func()
	done chan struct{}
}

// Stats are counters of a Runtime since it was created.
type Stats struct {
	// Applied counts records Machine.Apply accepted.
	Applied uint64
	// Rejected counts records Machine.Apply rejected.
	Rejected uint64
	// Emitted counts outputs published and stored (a retried publish the duplicate window
	// drops counts once).
	Emitted uint64
	// Suppressed counts outputs of replayed input records that were not published again
	// because the output stream already held them (see Producer).
	Suppressed uint64
	// Acked counts barriers answered with a stored snapshot.
	Acked uint64
	// Declined counts barriers declined.
	Declined uint64
	// Reused counts acks that referenced an earlier, identical object instead of uploading.
	Reused uint64
	// BytesUploaded is the total size of the snapshots uploaded.
	BytesUploaded uint64
	// DeadLettered counts records written to CAIRN_DEADLETTER and skipped (PoisonDeadLetter).
	DeadLettered uint64
	// DeadLettersReplayed counts replayed records found dead-lettered before: applied
	// again, their outputs not published, not dead-lettered again.
	DeadLettersReplayed uint64
	// Panics counts the panics of the Machine's code the runtime recovered.
	Panics uint64
}

// counters are the atomic form of Stats.
type counters struct {
	applied, rejected, emitted, suppressed, acked, declined, reused, bytesUploaded atomic.Uint64
	deadLettered, deadLettersReplayed, panics                                      atomic.Uint64
}

// Run runs machine as the instance cfg names until ctx is done: New, then Runtime.Run.
// machine must be in its initial, empty state.
func Run(ctx context.Context, nc *nats.Conn, cfg Config, machine Machine) error {
	rt, err := New(nc, cfg, machine)
	if err != nil {
		return err
	}
	return rt.Run(ctx)
}

// New validates cfg and returns a Runtime for the instance it names, driving m over nc.
// m must be in its initial, empty state. Nothing touches the server before Run. New
// refuses a Machine that embeds a Keyed (ErrWrappedKeyed: give it the Keyed itself), and
// Config.ReemitOutputs for a Machine that is not a Producer.
//
// nc stays the caller's: the Runtime neither drains nor closes it, and renews the
// instance's registration at once after a reconnect. Connect with nats.MaxReconnects(-1),
// so that the connection outlives a server outage longer than nats.go's default 60
// attempts, and with nats.PingInterval(3*time.Second) and nats.MaxPingsOutstanding(2),
// so that a server that hangs is left for another within 9 s instead of nats.go's default
// 4 to 6 minutes; pass every seed URL. New warns through Config.Logger when nc is
// connected otherwise; Connect in Cairn's pkg/cairnjs sets all of it.
func New(nc *nats.Conn, cfg Config, m Machine) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case nc == nil:
		return nil, errors.New("operator runtime: nil NATS connection")
	case m == nil:
		return nil, errors.New("operator runtime: nil Machine")
	}
	cp, err := checkpointerOf(m)
	if err != nil {
		return nil, err
	}
	if cfg.ReemitOutputs && cp.producer() == nil {
		return nil, fmt.Errorf("%w: reemit outputs: the Machine (%T) emits no outputs (it is not a Producer)", ErrInvalidConfig, m)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("operator runtime: JetStream context: %w", err)
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	incarnation := nuid.Next()
	checkConn(nc, log.With("job", cfg.Job, "instance", cfg.Instance))
	r := &Runtime{
		cfg:         cfg,
		nc:          nc,
		js:          js,
		consumers:   js,
		streams:     js,
		outputs:     js,
		stores:      &snapshotStores{js: js},
		m:           m,
		cp:          cp,
		log:         log.With("job", cfg.Job, "instance", cfg.Instance, "incarnation", incarnation),
		incarnation: incarnation,
		ready:       make(chan struct{}),
		stopped:     make(chan struct{}),
		doCh:        make(chan doRequest),
		fencedCh:    make(chan struct{}),
		lease:       selfLease{confirm: make(chan confirmRequest), origin: time.Now()},
	}
	r.noise = lograte.New(noisePeriod, func(kind string, suppressed uint64) {
		r.log.Warn(kind, "suppressed", suppressed, "period", noisePeriod)
	})
	return r, nil
}

// Config returns the config the Runtime runs with, defaults filled in (Heartbeat stays 0
// when it is derived from the lease TTL).
func (r *Runtime) Config() Config { return r.cfg }

// Incarnation returns the id of this run of the instance, new for every Runtime.
func (r *Runtime) Incarnation() string { return r.incarnation }

// Position returns the input stream sequence of the last record applied (or of the
// restored snapshot), 0 before any.
func (r *Runtime) Position() uint64 { return r.position.Load() }

// Ready is closed once the state is restored, the instance is registered and records flow.
func (r *Runtime) Ready() <-chan struct{} { return r.ready }

// Stats returns the Runtime's counters.
func (r *Runtime) Stats() Stats {
	return Stats{
		Applied:             r.stats.applied.Load(),
		Rejected:            r.stats.rejected.Load(),
		Emitted:             r.stats.emitted.Load(),
		Suppressed:          r.stats.suppressed.Load(),
		Acked:               r.stats.acked.Load(),
		Declined:            r.stats.declined.Load(),
		Reused:              r.stats.reused.Load(),
		BytesUploaded:       r.stats.bytesUploaded.Load(),
		DeadLettered:        r.stats.deadLettered.Load(),
		DeadLettersReplayed: r.stats.deadLettersReplayed.Load(),
		Panics:              r.stats.panics.Load(),
	}
}

// Do runs fn on the processing goroutine, between two records, and returns once fn has
// returned: fn may read the Machine consistently with Position. Before Run has restored
// the state Do waits; it returns ctx's error when ctx ends first and ErrStopped once the
// processing goroutine has ended.
func (r *Runtime) Do(ctx context.Context, fn func()) error {
	req := doRequest{fn: fn, done: make(chan struct{})}
	select {
	case r.doCh <- req:
	case <-r.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	<-req.done
	return nil
}

// Run waits for the resources it uses to exist (logging one line for each it waits for),
// serves the instance's info, restores the state, checks the input for a gap, subscribes
// to barriers and checkpoint outcomes, starts the input consumer, registers the instance
// and processes records and barriers until ctx is done. It then stops reading, finishes
// persisting and acking the snapshots already taken (for at most 10s), deletes the
// registration and returns nil.
//
// It returns an error when it cannot start, unless ctx ended meanwhile: one wrapping
// ErrNoUsableSnapshot for a member none of whose snapshots can be restored, ErrInputGap
// when input the restored state needs may have been removed. It returns an error wrapping
// ErrReplaced when a newer incarnation of the instance registered: it then stops at once,
// publishes nothing more and leaves the registration in place. With Config.RestoreFrom it
// refuses to start with an error wrapping ErrRestoreFrom when that checkpoint cannot be
// restored. It returns an error wrapping ErrWrappedKeyed at the first barrier when the
// Machine wraps a Keyed (its checkpoints could not be restored), having declined it, and
// one wrapping ErrPanic when the Machine's Restore panicked. A record it cannot process
// goes to Config.OnPoison; under PoisonStop Run keeps running, processing nothing, until
// ctx is done.
func (r *Runtime) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return ErrAlreadyStarted
	}
	defer r.stop()
	err := r.run(ctx)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrReplaced) {
		r.log.Info("stopped while starting", "error", err)
		return nil
	}
	return err
}

func (r *Runtime) run(ctx context.Context) error {
	startedAt := time.Now().UTC()

	if err := r.lookup(ctx); err != nil {
		return err
	}
	svc, err := r.serve()
	if err != nil {
		return err
	}
	defer func() {
		if err := svc.Stop(); err != nil {
			r.log.Warn("stop micro service", "error", err)
		}
	}()
	every, err := r.heartbeatInterval(ctx)
	if err != nil {
		return err
	}
	var h history
	if err := retry.Do(ctx, func(ctx context.Context) (err error) {
		h.record, h.unreadable, err = r.claim(ctx)
		return err
	}, func(err error, wait time.Duration) {
		r.log.Warn("cannot claim the instance record; retrying", "error", err, "retry_in", wait)
	}); err != nil {
		return err
	}
	rs, err := r.restore(ctx, h)
	if err != nil {
		return err
	}
	if err := r.checkInputGap(ctx, rs); err != nil {
		if r.cfg.RestoreFrom != "" {
			return fmt.Errorf("%w: %s: %w", ErrRestoreFrom, rs.from, err)
		}
		return err
	}
	if rs.checkpoint != 0 {
		if err := r.markMember(ctx, rs.checkpoint); err != nil {
			return fmt.Errorf("record the membership of instance %s in %s: %w", r.cfg.Instance, cairnjs.InstanceBucket, err)
		}
	}
	input, err := r.inputAnchor(ctx, rs.position)
	if err != nil {
		return err
	}
	input.stall = every
	outs, err := r.startOutputs(ctx, rs)
	if err != nil {
		return err
	}
	known, err := r.knownDeadLetters(ctx, rs.position)
	if err != nil {
		return err
	}
	r.position.Store(rs.position)
	r.restoredCheckpoint, r.restoredFrom = rs.checkpoint, rs.from

	barriers := make(chan *nats.Msg, barrierBuffer)
	sub, err := r.nc.ChanSubscribe(r.cfg.subjects().Barrier(r.cfg.Job), barriers)
	if err != nil {
		return fmt.Errorf("subscribe to barriers: %w", err)
	}
	defer r.unsubscribe(sub)
	if err := r.flush(ctx); err != nil {
		return fmt.Errorf("subscribe to barriers: %w", err)
	}

	outcomes := make(chan *nats.Msg, barrierBuffer)
	if r.cp.listener() != nil {
		subs, err := r.subscribeOutcomes(ctx, outcomes)
		if err != nil {
			return err
		}
		defer func() {
			for _, s := range subs {
				r.unsubscribe(s)
			}
		}()
	}

	records := make(chan delivery, recordBuffer)
	cc, err := r.consume(ctx, rs.position, records)
	if err != nil {
		return err
	}
	defer cc.Stop()

	reg, err := r.registration(startedAt)
	if err != nil {
		return err
	}
	registeredAt := time.Now()
	rev, err := r.register(ctx, reg)
	if err != nil {
		return err
	}

	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHeartbeat()
	heartbeatDone := make(chan struct{})
	r.lease.every, r.lease.done = every, heartbeatDone
	r.lease.renewed(registeredAt)
	go func() {
		defer close(heartbeatDone)
		r.heartbeat(hbCtx, reg, rev)
	}()
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	jobs := make(chan persistJob)
	persisterDone := make(chan struct{})
	p := &persister{r: r, last: rs.ref}
	go func() {
		defer close(persisterDone)
		p.run(drainCtx, jobs)
	}()

	r.log.Info("operator running", "position", rs.position, "restored_checkpoint", rs.checkpoint,
		"input_stream", r.cfg.InputStream, "input_filters", r.cfg.InputFilters, "heartbeat", every)
	close(r.ready)

	st := loopState{position: rs.position, lastBarrier: rs.checkpoint, input: input, outputs: outs, deadLetters: known, stopInput: cc.Stop}
	r.restoredOutcome(rs)
	queue, err := r.process(ctx, st, records, barriers, outcomes, jobs)
	r.stop()
	cc.Stop()
	r.unsubscribe(sub)
	removed := errors.Is(err, ErrInputRemoved)
	switch {
	case r.isFenced():
	case errors.Is(err, ErrWrappedKeyed):
	case removed:
		r.log.Error("input removed under the running consumer: stopping before any record after the gap, publishing nothing of it",
			"error", err, "position", r.Position())
	case err != nil:
		r.log.Warn("processing stopped at a record whose outputs are not all stored: the position stays before it and no snapshot is taken after it",
			"error", err, "position", r.Position())
	case r.halted.Load() != nil:
		r.log.Warn("operator stopping: its processing had stopped", "reason", r.stoppedReason(r.halted.Load()))
	}
	if r.isFenced() {
		// Replaced: publish nothing more; the persister releases what it is handed.
		cancelDrain()
	}

	// Keep the registration alive while the snapshots already taken are stored and acked,
	// so that the coordinator can still complete their checkpoints.
	r.log.Info("operator stopping: draining snapshots", "snapshots_queued", len(queue))
	drain := time.AfterFunc(drainTimeout, cancelDrain)
	defer drain.Stop()
	for _, j := range queue {
		jobs <- j
	}
	close(jobs)
	<-persisterDone
	stopHeartbeat()
	<-heartbeatDone
	if r.isFenced() {
		err := r.replacedError()
		r.log.Error("operator stopped: replaced by a newer incarnation", "error", err)
		return err
	}
	r.deregister(ctx)
	if removed {
		return err
	}
	if errors.Is(err, ErrWrappedKeyed) {
		r.log.Error("operator stopped: its Machine cannot be checkpointed", "error", err)
		return err
	}
	r.log.Info("operator stopped")
	return nil
}

// stop marks the processing goroutine as ended for Do.
func (r *Runtime) stop() { r.stopOnce.Do(func() { close(r.stopped) }) }

func (r *Runtime) unsubscribe(sub *nats.Subscription) {
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
		r.log.Warn("unsubscribe", "subject", sub.Subject, "error", err)
	}
}

// flush waits until the server has processed everything sent so far.
func (r *Runtime) flush(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	return r.nc.FlushWithContext(fctx)
}

// consume starts the ordered consumer on the input filters after position; its records
// go to records in stream order until ctx is done.
func (r *Runtime) consume(ctx context.Context, position uint64, records chan<- delivery) (jetstream.ConsumeContext, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: r.cfg.InputFilters,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if position > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = position + 1
	}
	cons, err := r.consumers.OrderedConsumer(ctx, r.cfg.InputStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create ordered consumer on %s (%s): %w", r.cfg.InputStream, strings.Join(r.cfg.InputFilters, ", "), err)
	}
	done, stopped := ctx.Done(), r.stopped
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			r.log.Warn("input message without JetStream metadata skipped", "error", err, "subject", msg.Subject())
			return
		}
		rec := delivery{
			Record:   Record{Subject: msg.Subject(), Data: msg.Data(), Header: msg.Headers(), Sequence: md.Sequence.Stream},
			consumer: md.Consumer,
			pending:  md.NumPending,
			at:       time.Now(),
		}
		select {
		case records <- rec:
		case <-done:
		case <-stopped:
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		r.log.Warn("input consumer", "error", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s (%s): %w", r.cfg.InputStream, strings.Join(r.cfg.InputFilters, ", "), err)
	}
	return cc, nil
}
