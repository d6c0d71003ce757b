package loop

import (
	"context"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/lograte"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Job owns one job's coordination state. Only Run's goroutine touches the parts below the
// channels; everything else talks to it through the channels and the mailbox.
type Job struct {
	name    string
	coordID string
	log     zerolog.Logger
	// noise rate-limits the job's warnings that an outage repeats (NoisePeriod).
	noise *lograte.Limiter
	b     Backend

	// mail receives config events, registrations, acks and lease states without ever
	// blocking the sender; the channels carry requests that wait for the loop.
	mail     *mailbox
	status   chan chan messages.Status
	removes  chan removeRequest
	triggers chan triggerRequest
	deletes  chan deleteRequest

	timer *time.Timer
	lease Lease
	// manifestBytes is what a manifest may take (half the server's max_payload); the
	// barriers share it out as each member's MaxDeltas (deltaBudget). 0: no limit sent.
	manifestBytes int64

	config   configState
	sched    schedule
	roster   roster
	inflight inflight
	stored   stored
	stats    stats
	pacing   retentionPacing
}

// configState is the config the loop applies.
type configState struct {
	cfg       messages.CheckpointConfig
	version   uint64
	appliedAt time.Time
}

// schedule is what the scheduling rule reads besides the config.
type schedule struct {
	lastTrigger  time.Time
	lastComplete time.Time
	// retryAt holds the next barrier back after a failed trigger.
	retryAt time.Time
	// prepared is the id of the next barrier, taken from the counter up to prepareLead
	// before it is due so that no KV round trip sits between the timer and the barrier;
	// 0 when none is taken. It belongs to the lease's tenure: fence drops it.
	prepared uint64
}

// roster is the job's instances and members.
type roster struct {
	// instances are the registered instances (instance → incarnation).
	instances map[string]string
	// left is when this coordinator saw a registration go, per instance, until the
	// instance takes part in a completed checkpoint again.
	left map[string]time.Time
	// marked holds, per member, the incarnation whose membership its instance record holds
	// (markMembers).
	marked map[string]string
	// removals are member removals waiting for a manifest without the member.
	removals map[string]*removal
}

// inflight is what waits for a checkpoint to end.
type inflight struct {
	// pending are the triggered checkpoints, ordered by id.
	pending []*pending
	// manual are manual checkpoint requests waiting for their checkpoint to end.
	manual []*manualTrigger
}

// stored is what the loop knows of the job's stored manifests.
type stored struct {
	// prev is the newest manifest (the predecessor of the next one), valid while prevOK:
	// read at take-over, replaced by every manifest this loop writes. It holds every member.
	prev   *messages.Manifest
	prevOK bool
	// savepoints are the job's savepoints by name, valid while savepointsOK: read at
	// take-over or when first needed, kept up to date by this loop.
	savepoints   map[string]*messages.Manifest
	savepointsOK bool
	// lost is the manifests_lost alarm, set while this coordinator holds the lease.
	lost *messages.Alarm
}

// stats is the checkpoint bookkeeping status reports.
type stats struct {
	lastCompleted *messages.CompletedCheckpoint
	lastAborted   *messages.AbortedCheckpoint
	completed     uint64
	aborted       uint64
	lateAcks      uint64
	// droppedAcks counts acks of instances or incarnations a checkpoint did not expect.
	droppedAcks uint64
	// inherited is the last id issued before this coordinator took the job.
	inherited uint64
	// failures counts consecutive counted aborts.
	failures int
	// aborts is the current run of aborts with one reason (nil after a completion), alarm
	// the run that raised the job's alarm, until a completion clears it (alarm.go).
	aborts *abortRun
	alarm  *abortRun
}

// retentionPacing is what the loop hands retention and when (retention.go).
type retentionPacing struct {
	// written are the manifests written since the last retention request, unretained the
	// completions since then (retainCompleted), retainedAt when it was made.
	written    []*messages.Manifest
	unretained int
	retainedAt time.Time
	// dropped are snapshots acked for checkpoints aborted, not yet freed by retention.
	dropped []messages.SnapshotRef
	// acked holds per instance the object of its newest ack (noteAck).
	acked map[string]ackedObject
}

// Config names the job a loop coordinates and the limits it works under.
type Config struct {
	// Job is the job's name; Coordinator the id of this coordinator.
	Job, Coordinator string
	// ManifestBytes is what a manifest may take (half the server's max_payload); 0: no
	// limit is sent in barriers.
	ManifestBytes int64
}

// New returns the loop of a job; Run runs it.
func New(cfg Config, b Backend, log zerolog.Logger) *Job {
	j := newJob(cfg.Job, cfg.Coordinator, b, log)
	j.manifestBytes = cfg.ManifestBytes
	return j
}

func newJob(name, coordID string, b Backend, log zerolog.Logger) *Job {
	log = log.With().Str("job", name).Logger()
	return &Job{
		name:     name,
		coordID:  coordID,
		log:      log,
		noise:    zlog.RateLimited(log, NoisePeriod),
		b:        b,
		mail:     newMailbox(),
		status:   make(chan chan messages.Status),
		removes:  make(chan removeRequest, 16),
		triggers: make(chan triggerRequest, 16),
		deletes:  make(chan deleteRequest, 16),
		config:   configState{cfg: messages.DefaultConfig()},
		roster:   roster{instances: map[string]string{}, left: map[string]time.Time{}, removals: map[string]*removal{}, marked: map[string]string{}},
	}
}

// NoisePeriod is how often a warning that repeats is logged at most (lograte): the first
// of its kind at once, then one line per period with the count of those suppressed.
const NoisePeriod = 10 * time.Second

// Run is the job's owning loop; it returns when ctx is done.
func (j *Job) Run(ctx context.Context) {
	j.timer = time.NewTimer(time.Hour)
	defer j.timer.Stop()
	for {
		j.arm(time.Now())
		select {
		case <-ctx.Done():
			j.stop()
			return
		case <-j.mail.wake:
			j.drain(ctx)
		case a := <-j.mail.acks:
			j.handleAck(ctx, a)
		case reply := <-j.status:
			reply <- j.view(time.Now())
		case r := <-j.removes:
			j.requestRemoval(ctx, r)
		case r := <-j.triggers:
			j.requestTrigger(ctx, r)
		case r := <-j.deletes:
			j.requestDelete(ctx, r)
		case <-j.timer.C:
			j.tick(ctx, time.Now())
		}
	}
}

// stop aborts what is pending when the coordinator shuts down; ctx is already done, so
// the events get a short context of their own.
func (j *Job) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, p := range slices.Clone(j.inflight.pending) {
		j.abort(ctx, p, messages.AbortCoordinatorChange, "coordinator stopped")
	}
	j.failRemovals(func(*removal) bool { return true }, Unavailable, "coordinator stopped; nothing was removed")
	j.failManual("coordinator stopped; the checkpoint did not complete, try again")
}
