package loop

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/backoff"
	"github.com/cairn-stream/cairn/internal/lograte"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// pending is a triggered checkpoint that has not ended.
type pending struct {
	id          uint64
	version     uint64
	triggeredAt time.Time
	deadline    time.Time
	timeout     time.Duration
	expected    map[string]string // instance → incarnation at trigger time
	acks        map[string]*messages.Ack
	barrier     *messages.Barrier
	// resent counts the barrier's resends, the last at sentAt (the trigger before any).
	resent int
	sentAt time.Time
	// savepoint names the savepoint the checkpoint is taken as; empty for others.
	savepoint string
}

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
	cfg       messages.Config
	version   uint64
	appliedAt time.Time
	// staleConfigs counts config events the loop ignored as not newer than the applied one.
	staleConfigs uint64
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

// removeRequest asks the job's loop to remove a member; done is called once, from the
// loop, with the outcome.
type removeRequest struct {
	instance string
	done     func(*messages.MemberRemoval, *Error)
}

// OfferLease hands the loop a new lease state; it never blocks.
func (j *Job) OfferLease(l Lease) { j.mail.offerLease(l) }

// OfferConfig hands the loop a config event; it never blocks. An event not newer than the
// applied or pending one is dropped and counted as stale.
func (j *Job) OfferConfig(ev *messages.ConfigEvent) { j.mail.offerConfig(ev) }

// OfferRegistration hands the loop a registration change or a full set; it never blocks.
func (j *Job) OfferRegistration(r Registration) { j.mail.offerReg(r) }

// OfferAck queues an ack; it reports false when the mailbox is full and the ack dropped.
func (j *Job) OfferAck(a *messages.Ack) bool { return j.mail.offerAck(a) }

// DroppedAcks counts the acks dropped because the mailbox was full.
func (j *Job) DroppedAcks() uint64 { return j.mail.droppedAcks.Load() }

// Status returns the job's status from its loop; false when ctx ends first.
func (j *Job) Status(ctx context.Context) (messages.Status, bool) {
	reply := make(chan messages.Status, 1)
	if !send(ctx, j.status, reply) {
		return messages.Status{}, false
	}
	select {
	case st := <-reply:
		return st, true
	case <-ctx.Done():
		return messages.Status{}, false
	}
}

// RemoveMember asks the loop to remove a member; done is called once, from the loop, when
// the removal is decided. False when ctx ends before the loop took the request (done is
// not called).
func (j *Job) RemoveMember(ctx context.Context, instance string, done func(*messages.MemberRemoval, *Error)) bool {
	return send(ctx, j.removes, removeRequest{instance: instance, done: done})
}

// Trigger asks the loop for a manual checkpoint, kept as a savepoint when savepoint is
// set; done is called once, from the loop, when the checkpoint has ended or the request is
// refused. False when ctx ends before the loop took the request (done is not called).
func (j *Job) Trigger(ctx context.Context, savepoint string, done func(*messages.CheckpointResult, *Error)) bool {
	return send(ctx, j.triggers, triggerRequest{savepoint: savepoint, done: done})
}

// DeleteSavepoint asks the loop to delete a savepoint; done is called once, from the loop.
// False when ctx ends before the loop took the request (done is not called).
func (j *Job) DeleteSavepoint(ctx context.Context, name string, done func(*messages.SavepointDeleted, *Error)) bool {
	return send(ctx, j.deletes, deleteRequest{savepoint: name, done: done})
}

// send delivers v on ch unless ctx ends first.
func send[T any](ctx context.Context, ch chan<- T, v T) bool {
	select {
	case ch <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

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

// canTrigger reports whether a barrier may be sent at all (ignoring time): a removal or a
// manual request waiting for its checkpoint needs one even with no registered instance.
func (j *Job) canTrigger(now time.Time) bool {
	return j.lease.Held && now.Before(j.lease.ValidUntil) &&
		len(j.inflight.pending) < j.config.cfg.MaxConcurrent && (len(j.roster.instances) > 0 || j.removalDue() || j.manualDue())
}

// next is when the next barrier is due under the scheduling rule, or at once (after a
// failed trigger's retry time) when a removal or a manual request waits for its checkpoint.
func (j *Job) next(now time.Time) time.Time {
	if j.removalDue() || j.manualDue() {
		return later(now, j.sched.retryAt)
	}
	return later(nextTrigger(j.config.cfg, j.sched.lastTrigger, j.sched.lastComplete, now), j.sched.retryAt)
}

// arm resets the loop's one timer to the earliest of: the next trigger, the earliest
// pending deadline, the end of the lease's validity.
func (j *Job) arm(now time.Time) {
	var wake time.Time
	earliest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	if j.canTrigger(now) {
		due := j.next(now)
		if j.sched.prepared == 0 {
			due = due.Add(-prepareLead(j.config.cfg.Interval))
		}
		earliest(due)
	}
	for _, p := range j.inflight.pending {
		earliest(p.deadline)
	}
	if j.lease.Held {
		earliest(j.lease.ValidUntil)
	}
	if j.pacing.unretained > 0 {
		earliest(j.retainDue())
	}
	if wake.IsZero() {
		j.timer.Stop()
		return
	}
	j.timer.Reset(max(wake.Sub(now), 0))
}

func (j *Job) tick(ctx context.Context, now time.Time) {
	if j.lease.Held && !now.Before(j.lease.ValidUntil) {
		j.fence(ctx, "lease not renewed in time")
	}
	for _, p := range slices.Clone(j.inflight.pending) {
		if !now.Before(p.deadline) {
			j.abort(ctx, p, messages.AbortTimeout, fmt.Sprintf("no ack from %s within %s", strings.Join(p.missing(), ", "), p.timeout))
		}
	}
	if j.canTrigger(now) {
		due := j.next(now)
		if j.sched.prepared == 0 && !now.Before(due.Add(-prepareLead(j.config.cfg.Interval))) && j.prepare(ctx, now) {
			now = time.Now()
		}
		if j.sched.prepared != 0 && !now.Before(due) {
			j.trigger(ctx, now)
		}
	}
	if j.pacing.unretained > 0 && !now.Before(j.retainDue()) {
		j.retainNow(false)
	}
}

func (j *Job) applyConfig(ev *messages.ConfigEvent) {
	if ev.Version <= j.config.version {
		j.config.staleConfigs++
		j.log.Debug().Uint64("version", ev.Version).Uint64("applied", j.config.version).Msg("config version ignored: not newer than the applied one")
		return
	}
	old := j.config.cfg
	j.config.cfg, j.config.version, j.config.appliedAt = ev.Config, ev.Version, time.Now()
	j.mail.applied.Store(ev.Version)
	j.log.Info().Uint64("version", ev.Version).Stringer("interval", ev.Config.Interval).Stringer("previous_interval", old.Interval).
		Stringer("timeout", ev.Config.Timeout).Stringer("min_pause", ev.Config.MinPause).Int("max_concurrent", ev.Config.MaxConcurrent).
		Msg("config applied")
}

func (j *Job) register(ctx context.Context, r Registration) {
	if r.Sync {
		for inst := range j.roster.instances {
			if _, ok := r.All[inst]; !ok {
				j.register(ctx, Registration{Instance: inst})
			}
		}
		for inst, inc := range r.All {
			j.register(ctx, Registration{Instance: inst, Incarnation: inc})
		}
		return
	}
	old, had := j.roster.instances[r.Instance]
	if old == r.Incarnation {
		j.resend(r.Instance, r.Incarnation)
		return
	}
	if r.Incarnation == "" {
		delete(j.roster.instances, r.Instance)
		if had {
			j.roster.left[r.Instance] = time.Now()
		}
		j.log.Info().Str("instance", r.Instance).Msg("instance left")
	} else {
		j.roster.instances[r.Instance] = r.Incarnation
		j.log.Info().Str("instance", r.Instance).Str("incarnation", r.Incarnation).Msg("instance registered")
	}
	if !had {
		return
	}
	// A pending checkpoint that already holds the instance's ack keeps it: the snapshot
	// was taken before the instance left or restarted and is still exact.
	for _, p := range slices.Clone(j.inflight.pending) {
		_, acked := p.acks[r.Instance]
		if inc, ok := p.expected[r.Instance]; ok && inc == old && !acked {
			detail := fmt.Sprintf("instance %s left", r.Instance)
			if r.Incarnation != "" {
				detail = fmt.Sprintf("instance %s restarted (incarnation %s → %s)", r.Instance, old, r.Incarnation)
			}
			j.abort(ctx, p, messages.AbortInstanceLost, detail)
		}
	}
}

func (j *Job) setLease(ctx context.Context, l Lease) {
	was := j.lease.Held
	if was && l.Held && l.Tenure != j.lease.Tenure {
		// Lost and taken again between two looks at the mailbox: another coordinator may
		// have acted in between, so what is pending belongs to the old tenure.
		j.fence(ctx, "lease lost and taken again")
		was = false
	}
	j.lease = l
	switch {
	case l.Held && !was:
		j.takeOver(ctx)
	case !l.Held && was:
		j.fence(ctx, "lease lost")
	}
}

// takeOver starts coordinating after acquiring the lease: the schedule continues from the
// newest manifest, or starts one interval from now when there is none.
func (j *Job) takeOver(ctx context.Context) {
	now := time.Now()
	j.sched.lastTrigger, j.sched.lastComplete = now, time.Time{}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	m, err := j.latest(cctx)
	j.stored.prev, j.stored.prevOK = m, err == nil
	if err != nil {
		// Without the newest manifest there is no telling which inherited ids completed:
		// abort none of them.
		j.log.Warn().Err(err).Msg("cannot read the latest manifest; scheduling from now")
		return
	}
	var completed uint64
	if m != nil {
		j.sched.lastTrigger, j.sched.lastComplete, completed = m.TriggeredAt, m.CompletedAt, m.CheckpointID
	}
	ids, last, err := j.b.Unfinished(cctx, completed)
	if err != nil {
		j.log.Warn().Err(err).Msg("cannot tell which checkpoints the previous coordinator left unfinished")
	}
	j.stats.inherited = last
	if err := j.ensureSavepoints(ctx); err != nil {
		j.log.Warn().Err(err).Msg("cannot read the savepoints; reading them again when needed")
	}
	for _, id := range ids {
		j.stats.aborted++
		ev := &messages.CheckpointEvent{
			Schema: messages.SchemaVersion, Job: j.name, CheckpointID: id, Outcome: messages.Aborted,
			FinishedAt: now.UTC(), Reason: messages.AbortCoordinatorChange,
			Detail: "taken by a previous coordinator that stopped before the checkpoint ended (its barrier may not have been sent)",
		}
		if err := j.b.PublishEvent(cctx, ev); err != nil {
			j.log.Error().Err(err).Uint64("checkpoint", id).Msg("cannot publish the aborted event")
		}
	}
	j.log.Info().Uint64("last_inherited_id", last).Uints64("aborted_unfinished", ids).Msg("took the job's lease")
}

// fence stops coordinating: every pending checkpoint is aborted.
func (j *Job) fence(ctx context.Context, why string) {
	j.lease.Held = false
	j.sched.prepared = 0 // taken under the lost Tenure: another holder may have issued higher ids since
	for _, p := range slices.Clone(j.inflight.pending) {
		j.abort(ctx, p, messages.AbortCoordinatorChange, why)
	}
	j.stored.prev, j.stored.prevOK = nil, false
	j.stored.savepoints, j.stored.savepointsOK = nil, false
	j.pacing.written, j.pacing.unretained = nil, 0 // the holder's retention takes over
	j.stored.lost = nil
	clear(j.roster.marked)
	j.failRemovals(func(*removal) bool { return true }, Unavailable, "this coordinator stopped coordinating the job ("+why+"); nothing was removed")
	j.failManual("this coordinator stopped coordinating the job (" + why + "); the checkpoint did not complete, try again")
	j.log.Warn().Str("why", why).Msg("stopped coordinating the job")
}

// prepareLead is how long before a barrier is due its id is taken from the counter (a
// compare-and-set, one KV round trip, see prepare): a tenth of the interval, at most 50 ms.
func prepareLead(interval time.Duration) time.Duration {
	return min(interval/10, 50*time.Millisecond)
}

// prepare takes the next barrier's id from the counter and keeps it in j.sched.prepared; it
// reports whether it did. The lease's validity is checked again after the call (a
// blocking call bounded by the validity).
func (j *Job) prepare(ctx context.Context, now time.Time) bool {
	cctx, cancel := j.callCtx(ctx)
	id, err := j.b.NextID(cctx)
	cancel()
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended while allocating a checkpoint id; no barrier sent")
		return false
	}
	if err != nil {
		j.retryLater(now)
		if errors.Is(err, ErrFenced) {
			j.fence(ctx, err.Error())
			return false
		}
		if msg := "cannot allocate a checkpoint id; retrying"; j.noise.Allow(msg) {
			j.log.Error().Err(err).Msg(msg)
		}
		return false
	}
	j.sched.prepared = id
	return true
}

// trigger sends the barrier of the prepared id, carrying the lease revision as the
// fencing token; the lease's validity is checked right before the barrier goes out.
func (j *Job) trigger(ctx context.Context, now time.Time) {
	id := j.sched.prepared
	j.sched.prepared = 0
	p := &pending{
		id:          id,
		version:     j.config.version,
		triggeredAt: now,
		timeout:     j.config.cfg.Timeout,
		deadline:    now.Add(j.config.cfg.Timeout),
		expected:    maps.Clone(j.roster.instances),
		acks:        map[string]*messages.Ack{},
	}
	b := &messages.Barrier{
		Schema: messages.SchemaVersion, Job: j.name, CheckpointID: id, ConfigVersion: j.config.version, TriggeredAt: now.UTC(),
		Coordinator: j.coordID, Token: j.lease.Rev, MaxDeltas: j.deltaBudget(),
	}
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended before the barrier was sent; no barrier sent")
		return
	}
	if err := j.b.SendBarrier(b); err != nil {
		j.retryLater(now)
		if msg := "cannot send the barrier; retrying with a new id"; j.noise.Allow(msg) {
			j.log.Error().Err(err).Uint64("checkpoint", id).Msg(msg)
		}
		return
	}
	p.barrier, p.sentAt = b, now
	j.inflight.pending = append(j.inflight.pending, p)
	j.sched.lastTrigger, j.sched.retryAt = now, time.Time{}
	for _, r := range j.roster.removals {
		if r.checkpoint == 0 {
			r.checkpoint = id
		}
	}
	j.attachManual(p)
	if e := j.log.Info(); e.Enabled() { // the participants are sorted for the log line only
		e.Uint64("checkpoint", id).Uint64("config_version", j.config.version).Strs("participants", p.participants()).Str("savepoint", p.savepoint).Msg("barrier sent")
	}
	if len(p.expected) == 0 {
		j.complete(ctx, p)
	}
}

// deltaRefBytes is what a delta reference in a manifest takes besides its object name
// (job/id/instance): the checkpoint id, size, digest and msgpack's field names, rounded up.
const deltaRefBytes = 112

// deltaBudget is the barrier's MaxDeltas: how many delta references each member's chain
// may hold so that a manifest of every member fits in manifestBytes. 0 when no budget is
// set; at least 1.
func (j *Job) deltaBudget() int {
	if j.manifestBytes <= 0 {
		return 0
	}
	var per int64
	for inst := range j.roster.instances {
		per += int64(len(j.name) + len(inst) + deltaRefBytes)
	}
	if j.stored.prev != nil {
		for inst := range j.stored.prev.Instances {
			if _, ok := j.roster.instances[inst]; !ok {
				per += int64(len(j.name) + len(inst) + deltaRefBytes)
			}
		}
	}
	if per == 0 {
		return 0
	}
	return int(max(1, j.manifestBytes/per))
}

// resendAfter is how long a checkpoint waits for an instance's ack before a heartbeat of
// that instance makes the coordinator send its barrier again; resendMaxGap bounds the
// gap between two resends of one barrier (resendGap).
const (
	resendAfter  = 250 * time.Millisecond
	resendMaxGap = 4 * time.Second
)

// resendGap is how long after its last sending a barrier resent n times may go out again:
// resendAfter, doubling with each resend, at most resendMaxGap. A barrier reaches every
// instance at once, so one resend answers every instance that asks within the gap, and a
// checkpoint's resends are bounded by its age, not by how many instances ask (300
// registrations that never acked once made 2 510 resends in 20 s). Within a checkpoint's
// first 20 s: at most 8.
func resendGap(n int) time.Duration { return backoff.Doubling(resendAfter, n, resendMaxGap) }

// resend sends again the barrier of every pending checkpoint that still waits for the
// instance, when the instance announces itself (a heartbeat, or the re-registration right
// after a reconnect) and the barrier's resendGap has passed. Barriers are core NATS
// messages: one sent while the instance was cut off (a NATS restart) is lost, and the
// checkpoint would otherwise wait for its timeout. An instance that asks within the gap
// asks again at its next heartbeat. Instances ignore barriers they have already handled.
func (j *Job) resend(instance, incarnation string) {
	now := time.Now()
	if !j.valid(now) {
		return
	}
	for _, p := range j.inflight.pending {
		_, acked := p.acks[instance]
		if acked || p.expected[instance] != incarnation || now.Sub(p.sentAt) < resendGap(p.resent) {
			continue
		}
		if err := j.b.SendBarrier(p.barrier); err != nil {
			if msg := "cannot send the barrier again"; j.noise.Allow(msg) {
				j.log.Warn().Err(err).Uint64("checkpoint", p.id).Msg(msg)
			}
			continue
		}
		p.resent, p.sentAt = p.resent+1, now
		j.log.Debug().Uint64("checkpoint", p.id).Str("instance", instance).Msg("barrier sent again: the instance has not acked")
	}
}

func (j *Job) handleAck(ctx context.Context, a *messages.Ack) {
	// The fields of a dropped ack's log line, built only when it is logged: a logger
	// With them would cost every ack.
	dropped := func() *zerolog.Event {
		return j.log.Debug().Uint64("checkpoint", a.CheckpointID).Str("instance", a.Instance)
	}
	p := j.find(a.CheckpointID)
	if p == nil {
		if j.roster.instances[a.Instance] == a.Incarnation {
			j.noteAck(a)
		}
		j.stats.lateAcks++
		if a.CheckpointID <= j.stats.inherited {
			dropped().Stringer("kind", a.Kind).Msg("ack for a checkpoint of a previous coordinator dropped")
		} else {
			dropped().Stringer("kind", a.Kind).Msg("late ack dropped: checkpoint not pending")
		}
		return
	}
	if inc, ok := p.expected[a.Instance]; !ok || inc != a.Incarnation {
		// A replaced process, or a stranger: counted, and warned about at a bounded rate.
		j.stats.droppedAcks++
		if msg := "ack dropped: instance or incarnation not expected"; j.noise.Allow(msg) {
			j.log.Warn().Uint64("checkpoint", a.CheckpointID).Str("instance", a.Instance).Str("incarnation", a.Incarnation).
				Str("expected_incarnation", inc).Msg(msg)
		}
		return
	}
	j.noteAck(a)
	if a.Kind == messages.AckDeclined {
		reason := messages.AbortDeclined
		if a.StorageFull {
			reason = messages.AbortStorageFull
		}
		j.abort(ctx, p, reason, fmt.Sprintf("%s declined: %s", a.Instance, a.Reason))
		return
	}
	p.acks[a.Instance] = a
	if len(p.acks) == len(p.expected) {
		j.complete(ctx, p)
	}
}

// complete writes the manifest of p, whose every expected instance acked, and moves
// <job>.latest to it. It never writes under a lease this coordinator no longer holds: the
// validity is checked before, after the predecessor is read, right before the write, and
// by the Backend again before <job>.latest moves (every call's deadline is the validity).
func (j *Job) complete(ctx context.Context, p *pending) {
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended before the checkpoint could complete")
		return
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	if !j.stored.prevOK {
		// Never write a manifest without its predecessor: it would drop the absent members.
		prev, err := j.latest(cctx)
		if !j.valid(time.Now()) {
			j.fence(ctx, "lease validity ended while reading the latest manifest; no manifest written")
			return
		}
		if err != nil {
			j.abort(ctx, p, messages.AbortStorage, fmt.Sprintf("cannot read the latest manifest, whose absent members the new one must carry forward: %v", err))
			return
		}
		j.stored.prev, j.stored.prevOK = prev, true
	}
	now := time.Now()
	m := &messages.Manifest{
		Schema:        messages.SchemaVersion,
		Job:           j.name,
		Token:         j.lease.Rev,
		CheckpointID:  p.id,
		ConfigVersion: p.version,
		TriggeredAt:   p.triggeredAt.UTC(),
		CompletedAt:   now.UTC(),
		Instances:     make(map[string]messages.InstanceSnapshot, len(p.acks)),
		Savepoint:     p.savepoint,
	}
	var written uint64
	for inst, a := range p.acks {
		m.Instances[inst] = messages.InstanceSnapshot{Incarnation: a.Incarnation, Snapshot: a.Snapshot, Deltas: a.Deltas, Positions: a.Positions, Filters: a.Filters, Checkpoint: p.id}
		written += a.Written
	}
	j.carryForward(m)
	var prevID uint64
	if j.stored.prev != nil {
		prevID = j.stored.prev.CheckpointID
	}
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended before the manifest was written; no manifest written")
		return
	}
	err := j.b.WriteManifest(cctx, m, prevID)
	if errors.Is(err, ErrManifestsLost) {
		// m carries every member of its predecessor forward: written as the first manifest
		// of the job, it keeps what this coordinator still knows of them.
		j.manifestsLost(err)
		err = j.b.WriteManifest(cctx, m, 0)
	}
	if err != nil {
		if errors.Is(err, ErrFenced) {
			j.fence(ctx, err.Error())
			return
		}
		if !j.valid(time.Now()) {
			j.fence(ctx, fmt.Sprintf("lease validity ended while writing the manifest (%v); checkpoint not completed", err))
			return
		}
		j.stored.prevOK = false
		j.abort(ctx, p, messages.AbortStorage, fmt.Sprintf("write manifest: %v", err))
		return
	}
	j.stored.prev = m
	for inst := range p.acks {
		delete(j.roster.left, inst)
	}
	j.markMembers(cctx, m)
	j.remove(p)
	for _, older := range slices.Clone(j.inflight.pending) {
		if older.id < p.id {
			j.abort(ctx, older, messages.AbortSubsumed, fmt.Sprintf("checkpoint %d completed first", p.id))
		}
	}
	if j.stats.failures > 0 && j.failed() {
		j.log.Info().Int("failures", j.stats.failures).Msg("job no longer failed: a checkpoint completed")
	}
	j.sched.lastComplete, j.stats.failures = now, 0
	j.stats.completed++
	j.noteCompletion(ctx, p.id, now)
	participants, bytes := p.participants(), m.Bytes()
	j.stats.lastCompleted = &messages.CompletedCheckpoint{
		ID: p.id, ConfigVersion: p.version, TriggeredAt: m.TriggeredAt, CompletedAt: m.CompletedAt,
		Duration: now.Sub(p.triggeredAt).String(), Bytes: bytes, BytesWritten: written, Participants: participants,
	}
	ev := &messages.CheckpointEvent{
		Schema: messages.SchemaVersion, Job: j.name, CheckpointID: p.id, ConfigVersion: p.version,
		Outcome: messages.Completed, TriggeredAt: m.TriggeredAt, FinishedAt: m.CompletedAt,
		Participants: participants, Bytes: bytes, Written: written,
	}
	if err := j.b.PublishEvent(cctx, ev); err != nil {
		j.log.Error().Err(err).Uint64("checkpoint", p.id).Msg("cannot publish the completed event")
	}
	j.pacing.written = append(j.pacing.written, m)
	j.retainCompleted(now)
	j.log.Info().Uint64("checkpoint", p.id).Uint64("config_version", p.version).Str("duration", j.stats.lastCompleted.Duration).
		Uint64("bytes", bytes).Uint64("bytes_written", written).Int("participants", len(participants)).
		Int("members", len(m.Instances)).Msg("checkpoint completed")
	j.finishRemovals(ctx, m)
	j.finishManual(ctx, p, m)
}

// carryForward adds to m every member of the predecessor manifest that did not take part,
// unchanged: it consumed nothing it could ack, so its last state is still exact. Members
// being removed are left out.
func (j *Job) carryForward(m *messages.Manifest) {
	if j.stored.prev == nil {
		return
	}
	for inst, s := range j.stored.prev.Instances {
		if _, ok := m.Instances[inst]; ok {
			continue
		}
		if _, ok := j.roster.removals[inst]; ok {
			continue
		}
		s.Checkpoint = s.From(j.stored.prev.CheckpointID)
		if s.AbsentSince.IsZero() {
			s.AbsentSince = j.stored.prev.CompletedAt
			if t, ok := j.roster.left[inst]; ok {
				s.AbsentSince = t.UTC()
			}
		}
		m.Instances[inst] = s
	}
}

func (j *Job) abort(ctx context.Context, p *pending, reason messages.AbortReason, detail string) {
	j.remove(p)
	for _, a := range p.acks {
		j.pacing.dropped = append(j.pacing.dropped, a.Refs()...)
	}
	now := time.Now()
	j.stats.aborted++
	if reason.Counted() {
		j.stats.failures++
	}
	failed := j.failed()
	j.stats.lastAborted = &messages.AbortedCheckpoint{ID: p.id, ConfigVersion: p.version, AbortedAt: now.UTC(), Reason: reason.String(), Detail: detail}
	ev := &messages.CheckpointEvent{
		Schema: messages.SchemaVersion, Job: j.name, CheckpointID: p.id, ConfigVersion: p.version,
		Outcome: messages.Aborted, TriggeredAt: p.triggeredAt.UTC(), FinishedAt: now.UTC(),
		Participants: p.participants(), Reason: reason, Detail: detail, Failed: failed,
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	if err := j.b.PublishEvent(cctx, ev); err != nil {
		j.log.Error().Err(err).Uint64("checkpoint", p.id).Msg("cannot publish the aborted event")
	}
	e := j.log.Warn()
	if failed {
		e = j.log.Error()
	}
	e.Uint64("checkpoint", p.id).Stringer("reason", reason).Str("detail", detail).Int("consecutive_failures", j.stats.failures).
		Bool("failed", failed).Msg("checkpoint aborted")
	j.noteAbort(ctx, p.id, reason, detail, now)
	j.failRemovals(func(r *removal) bool { return r.checkpoint == p.id }, Unavailable,
		fmt.Sprintf("checkpoint %d, which was to remove the member, aborted (%s: %s); nothing was removed, the member stays", p.id, reason, detail))
	j.abortManual(p, reason, detail, now)
	// Free what the aborted checkpoint uploaded at once (a full store: everything that
	// can go), unless a completion that follows does it (subsumed) or this coordinator no
	// longer leads the job.
	if reason != messages.AbortSubsumed && j.lease.Held && ctx.Err() == nil {
		j.retainNow(reason == messages.AbortStorageFull)
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

// failed reports whether consecutive counted failures exceed tolerable_failures.
func (j *Job) failed() bool {
	return j.config.cfg.TolerableFailures >= 0 && j.stats.failures > j.config.cfg.TolerableFailures
}

func (j *Job) find(id uint64) *pending {
	for _, p := range j.inflight.pending {
		if p.id == id {
			return p
		}
	}
	return nil
}

func (j *Job) remove(p *pending) {
	j.inflight.pending = slices.DeleteFunc(j.inflight.pending, func(q *pending) bool { return q == p })
}

// liveRefs are the snapshots acked for checkpoints still pending: retention keeps them.
func (j *Job) liveRefs() []messages.SnapshotRef {
	var refs []messages.SnapshotRef
	for _, p := range j.inflight.pending {
		for _, a := range p.acks {
			refs = append(refs, a.Refs()...)
		}
	}
	return refs
}

func (p *pending) participants() []string {
	names := make([]string, 0, len(p.expected))
	for n := range p.expected {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (p *pending) missing() []string {
	var names []string
	for _, n := range p.participants() {
		if _, ok := p.acks[n]; !ok {
			names = append(names, n)
		}
	}
	return names
}
