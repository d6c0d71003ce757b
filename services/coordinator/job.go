package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/lograte"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// regUpdate reports an instance's registration (an empty incarnation means it is gone),
// or, with sync, the job's full set of registered instances (instance → incarnation).
type regUpdate struct {
	instance    string
	incarnation string
	sync        bool
	all         map[string]string
}

// leaseState is what the lease keeper tells the loop: whether this coordinator holds the
// job's lease, until when it may act on it, and who holds it. rev is the lease key's
// revision at the last take or renewal: the fencing token of barriers and manifests (KV
// revisions only grow, so a later holder's token is always higher). tenure is the revision
// at which this holder acquired the lease; a different tenure is a new take-over.
type leaseState struct {
	held       bool
	validUntil time.Time
	holder     string
	rev        uint64
	tenure     uint64
}

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

// job owns one job's coordination state. Only run's goroutine touches the fields below
// the channels; everything else talks to it through the channels.
type job struct {
	name    string
	coordID string
	log     zerolog.Logger
	// noise rate-limits the job's warnings that an outage repeats (noisePeriod).
	noise *lograte.Limiter
	b     backend

	// mail receives config events, registrations, acks and lease states without ever
	// blocking the sender.
	mail     *mailbox
	status   chan chan messages.Status
	removes  chan removeRequest
	triggers chan triggerRequest
	deletes  chan deleteRequest

	cfg           messages.Config
	version       uint64
	appliedAt     time.Time
	instances     map[string]string
	pending       []*pending // ordered by id
	lastTrigger   time.Time
	lastComplete  time.Time
	retryAt       time.Time
	lease         leaseState
	lastCompleted *messages.CompletedCheckpoint
	lastAborted   *messages.AbortedCheckpoint
	completed     uint64
	aborted       uint64
	lateAcks      uint64
	// droppedAcks counts acks of instances or incarnations a checkpoint did not expect.
	droppedAcks uint64
	inherited   uint64 // the last id issued before this coordinator took the job
	// prepared is the id of the next barrier, taken from the counter up to prepareLead
	// before it is due so that no KV round trip sits between the timer and the barrier;
	// 0 when none is taken. It belongs to the lease's tenure: fence drops it.
	prepared uint64
	// manifestBytes is what a manifest may take (half the server's max_payload); the
	// barriers share it out as each member's MaxDeltas (deltaBudget). 0: no limit sent.
	manifestBytes int64
	staleConfigs  uint64
	failures      int
	dropped       []messages.SnapshotRef // acked for checkpoints aborted, not yet freed by retention
	acked         map[string]ackedObject // per instance, the object of its newest ack (noteAck)

	// aborts is the current run of aborts with one reason (nil after a completion), alarm
	// the run that raised the job's alarm, until a completion clears it (alarm.go).
	aborts *abortRun
	alarm  *abortRun

	// written are the manifests written since the last retention request, unretained the
	// completions since then (retainCompleted), retainedAt when it was made.
	written    []*messages.Manifest
	unretained int
	retainedAt time.Time
	timer      *time.Timer
	// prev is the newest manifest (the predecessor of the next one), valid while prevOK:
	// read at take-over, replaced by every manifest this loop writes. It holds every member.
	prev   *messages.Manifest
	prevOK bool
	// left is when this coordinator saw a registration go, per instance, until the
	// instance takes part in a completed checkpoint again.
	left map[string]time.Time
	// removals are member removals waiting for a manifest without the member.
	removals map[string]*removal
	// manual are manual checkpoint requests waiting for their checkpoint to end.
	manual []*manualTrigger
	// savepoints are the job's savepoints by name, valid while savepointsOK: read at
	// take-over or when first needed, kept up to date by this loop.
	savepoints   map[string]*messages.Manifest
	savepointsOK bool
	// marked holds, per member, the incarnation whose membership its instance record holds
	// (markMembers).
	marked map[string]string
	// lost is the manifests_lost alarm, set while this coordinator holds the lease.
	lost *messages.Alarm
}

func newJob(name, coordID string, b backend, log zerolog.Logger) *job {
	log = log.With().Str("job", name).Logger()
	return &job{
		name:      name,
		coordID:   coordID,
		log:       log,
		noise:     zlog.RateLimited(log, noisePeriod),
		b:         b,
		mail:      newMailbox(),
		status:    make(chan chan messages.Status),
		removes:   make(chan removeRequest, 16),
		triggers:  make(chan triggerRequest, 16),
		deletes:   make(chan deleteRequest, 16),
		cfg:       messages.DefaultConfig(),
		instances: map[string]string{},
		left:      map[string]time.Time{},
		removals:  map[string]*removal{},
		marked:    map[string]string{},
	}
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

// run is the job's owning loop; it returns when ctx is done.
func (j *job) run(ctx context.Context) {
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
func (j *job) canTrigger(now time.Time) bool {
	return j.lease.held && now.Before(j.lease.validUntil) &&
		len(j.pending) < j.cfg.MaxConcurrent && (len(j.instances) > 0 || j.removalDue() || j.manualDue())
}

// next is when the next barrier is due under the scheduling rule, or at once (after a
// failed trigger's retry time) when a removal or a manual request waits for its checkpoint.
func (j *job) next(now time.Time) time.Time {
	if j.removalDue() || j.manualDue() {
		return later(now, j.retryAt)
	}
	return later(nextTrigger(j.cfg, j.lastTrigger, j.lastComplete, now), j.retryAt)
}

// arm resets the loop's one timer to the earliest of: the next trigger, the earliest
// pending deadline, the end of the lease's validity.
func (j *job) arm(now time.Time) {
	var wake time.Time
	earliest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	if j.canTrigger(now) {
		due := j.next(now)
		if j.prepared == 0 {
			due = due.Add(-prepareLead(j.cfg.Interval))
		}
		earliest(due)
	}
	for _, p := range j.pending {
		earliest(p.deadline)
	}
	if j.lease.held {
		earliest(j.lease.validUntil)
	}
	if j.unretained > 0 {
		earliest(j.retainDue())
	}
	if wake.IsZero() {
		j.timer.Stop()
		return
	}
	j.timer.Reset(max(wake.Sub(now), 0))
}

func (j *job) tick(ctx context.Context, now time.Time) {
	if j.lease.held && !now.Before(j.lease.validUntil) {
		j.fence(ctx, "lease not renewed in time")
	}
	for _, p := range slices.Clone(j.pending) {
		if !now.Before(p.deadline) {
			j.abort(ctx, p, messages.AbortTimeout, fmt.Sprintf("no ack from %s within %s", strings.Join(p.missing(), ", "), p.timeout))
		}
	}
	if j.canTrigger(now) {
		due := j.next(now)
		if j.prepared == 0 && !now.Before(due.Add(-prepareLead(j.cfg.Interval))) && j.prepare(ctx, now) {
			now = time.Now()
		}
		if j.prepared != 0 && !now.Before(due) {
			j.trigger(ctx, now)
		}
	}
	if j.unretained > 0 && !now.Before(j.retainDue()) {
		j.retainNow(false)
	}
}

func (j *job) applyConfig(ev *messages.ConfigEvent) {
	if ev.Version <= j.version {
		j.staleConfigs++
		j.log.Debug().Uint64("version", ev.Version).Uint64("applied", j.version).Msg("config version ignored: not newer than the applied one")
		return
	}
	old := j.cfg
	j.cfg, j.version, j.appliedAt = ev.Config, ev.Version, time.Now()
	j.mail.applied.Store(ev.Version)
	j.log.Info().Uint64("version", ev.Version).Stringer("interval", ev.Config.Interval).Stringer("previous_interval", old.Interval).
		Stringer("timeout", ev.Config.Timeout).Stringer("min_pause", ev.Config.MinPause).Int("max_concurrent", ev.Config.MaxConcurrent).
		Msg("config applied")
}

func (j *job) register(ctx context.Context, r regUpdate) {
	if r.sync {
		for inst := range j.instances {
			if _, ok := r.all[inst]; !ok {
				j.register(ctx, regUpdate{instance: inst})
			}
		}
		for inst, inc := range r.all {
			j.register(ctx, regUpdate{instance: inst, incarnation: inc})
		}
		return
	}
	old, had := j.instances[r.instance]
	if old == r.incarnation {
		j.resend(r.instance, r.incarnation)
		return
	}
	if r.incarnation == "" {
		delete(j.instances, r.instance)
		if had {
			j.left[r.instance] = time.Now()
		}
		j.log.Info().Str("instance", r.instance).Msg("instance left")
	} else {
		j.instances[r.instance] = r.incarnation
		j.log.Info().Str("instance", r.instance).Str("incarnation", r.incarnation).Msg("instance registered")
	}
	if !had {
		return
	}
	// A pending checkpoint that already holds the instance's ack keeps it: the snapshot
	// was taken before the instance left or restarted and is still exact.
	for _, p := range slices.Clone(j.pending) {
		_, acked := p.acks[r.instance]
		if inc, ok := p.expected[r.instance]; ok && inc == old && !acked {
			detail := fmt.Sprintf("instance %s left", r.instance)
			if r.incarnation != "" {
				detail = fmt.Sprintf("instance %s restarted (incarnation %s → %s)", r.instance, old, r.incarnation)
			}
			j.abort(ctx, p, messages.AbortInstanceLost, detail)
		}
	}
}

func (j *job) setLease(ctx context.Context, l leaseState) {
	was := j.lease.held
	if was && l.held && l.tenure != j.lease.tenure {
		// Lost and taken again between two looks at the mailbox: another coordinator may
		// have acted in between, so what is pending belongs to the old tenure.
		j.fence(ctx, "lease lost and taken again")
		was = false
	}
	j.lease = l
	switch {
	case l.held && !was:
		j.takeOver(ctx)
	case !l.held && was:
		j.fence(ctx, "lease lost")
	}
}

// takeOver starts coordinating after acquiring the lease: the schedule continues from the
// newest manifest, or starts one interval from now when there is none.
func (j *job) takeOver(ctx context.Context) {
	now := time.Now()
	j.lastTrigger, j.lastComplete = now, time.Time{}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	m, err := j.latest(cctx)
	j.prev, j.prevOK = m, err == nil
	if err != nil {
		// Without the newest manifest there is no telling which inherited ids completed:
		// abort none of them.
		j.log.Warn().Err(err).Msg("cannot read the latest manifest; scheduling from now")
		return
	}
	var completed uint64
	if m != nil {
		j.lastTrigger, j.lastComplete, completed = m.TriggeredAt, m.CompletedAt, m.CheckpointID
	}
	ids, last, err := j.b.unfinished(cctx, completed)
	if err != nil {
		j.log.Warn().Err(err).Msg("cannot tell which checkpoints the previous coordinator left unfinished")
	}
	j.inherited = last
	if err := j.ensureSavepoints(ctx); err != nil {
		j.log.Warn().Err(err).Msg("cannot read the savepoints; reading them again when needed")
	}
	for _, id := range ids {
		j.aborted++
		ev := &messages.CheckpointEvent{
			Schema: messages.SchemaVersion, Job: j.name, CheckpointID: id, Outcome: messages.Aborted,
			FinishedAt: now.UTC(), Reason: messages.AbortCoordinatorChange,
			Detail: "taken by a previous coordinator that stopped before the checkpoint ended (its barrier may not have been sent)",
		}
		if err := j.b.publishEvent(cctx, ev); err != nil {
			j.log.Error().Err(err).Uint64("checkpoint", id).Msg("cannot publish the aborted event")
		}
	}
	j.log.Info().Uint64("last_inherited_id", last).Uints64("aborted_unfinished", ids).Msg("took the job's lease")
}

// fence stops coordinating: every pending checkpoint is aborted.
func (j *job) fence(ctx context.Context, why string) {
	j.lease.held = false
	j.prepared = 0 // taken under the lost tenure: another holder may have issued higher ids since
	for _, p := range slices.Clone(j.pending) {
		j.abort(ctx, p, messages.AbortCoordinatorChange, why)
	}
	j.prev, j.prevOK = nil, false
	j.savepoints, j.savepointsOK = nil, false
	j.written, j.unretained = nil, 0 // the holder's retention takes over
	j.lost = nil
	clear(j.marked)
	j.failRemovals(func(*removal) bool { return true }, codeUnavailable, "this coordinator stopped coordinating the job ("+why+"); nothing was removed")
	j.failManual("this coordinator stopped coordinating the job (" + why + "); the checkpoint did not complete, try again")
	j.log.Warn().Str("why", why).Msg("stopped coordinating the job")
}

// prepareLead is how long before a barrier is due its id is taken from the counter (a
// compare-and-set, one KV round trip, see prepare): a tenth of the interval, at most 50 ms.
func prepareLead(interval time.Duration) time.Duration {
	return min(interval/10, 50*time.Millisecond)
}

// prepare takes the next barrier's id from the counter and keeps it in j.prepared; it
// reports whether it did. The lease's validity is checked again after the call (a
// blocking call bounded by the validity).
func (j *job) prepare(ctx context.Context, now time.Time) bool {
	cctx, cancel := j.callCtx(ctx)
	id, err := j.b.nextID(cctx)
	cancel()
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended while allocating a checkpoint id; no barrier sent")
		return false
	}
	if err != nil {
		j.retryAt = now.Add(min(j.cfg.Interval, time.Second))
		if errors.Is(err, ErrFenced) {
			j.fence(ctx, err.Error())
			return false
		}
		if msg := "cannot allocate a checkpoint id; retrying"; j.noise.Allow(msg) {
			j.log.Error().Err(err).Msg(msg)
		}
		return false
	}
	j.prepared = id
	return true
}

// trigger sends the barrier of the prepared id, carrying the lease revision as the
// fencing token; the lease's validity is checked right before the barrier goes out.
func (j *job) trigger(ctx context.Context, now time.Time) {
	id := j.prepared
	j.prepared = 0
	p := &pending{
		id:          id,
		version:     j.version,
		triggeredAt: now,
		timeout:     j.cfg.Timeout,
		deadline:    now.Add(j.cfg.Timeout),
		expected:    maps.Clone(j.instances),
		acks:        map[string]*messages.Ack{},
	}
	b := &messages.Barrier{
		Schema: messages.SchemaVersion, Job: j.name, CheckpointID: id, ConfigVersion: j.version, TriggeredAt: now.UTC(),
		Coordinator: j.coordID, Token: j.lease.rev, MaxDeltas: j.deltaBudget(),
	}
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended before the barrier was sent; no barrier sent")
		return
	}
	if err := j.b.sendBarrier(b); err != nil {
		j.retryAt = now.Add(min(j.cfg.Interval, time.Second))
		if msg := "cannot send the barrier; retrying with a new id"; j.noise.Allow(msg) {
			j.log.Error().Err(err).Uint64("checkpoint", id).Msg(msg)
		}
		return
	}
	p.barrier, p.sentAt = b, now
	j.pending = append(j.pending, p)
	j.lastTrigger, j.retryAt = now, time.Time{}
	for _, r := range j.removals {
		if r.checkpoint == 0 {
			r.checkpoint = id
		}
	}
	j.attachManual(p)
	if e := j.log.Info(); e.Enabled() { // the participants are sorted for the log line only
		e.Uint64("checkpoint", id).Uint64("config_version", j.version).Strs("participants", p.participants()).Str("savepoint", p.savepoint).Msg("barrier sent")
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
func (j *job) deltaBudget() int {
	if j.manifestBytes <= 0 {
		return 0
	}
	var per int64
	for inst := range j.instances {
		per += int64(len(j.name) + len(inst) + deltaRefBytes)
	}
	if j.prev != nil {
		for inst := range j.prev.Instances {
			if _, ok := j.instances[inst]; !ok {
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
func resendGap(n int) time.Duration { return min(resendAfter<<min(n, 5), resendMaxGap) }

// resend sends again the barrier of every pending checkpoint that still waits for the
// instance, when the instance announces itself (a heartbeat, or the re-registration right
// after a reconnect) and the barrier's resendGap has passed. Barriers are core NATS
// messages: one sent while the instance was cut off (a NATS restart) is lost, and the
// checkpoint would otherwise wait for its timeout. An instance that asks within the gap
// asks again at its next heartbeat. Instances ignore barriers they have already handled.
func (j *job) resend(instance, incarnation string) {
	now := time.Now()
	if !j.valid(now) {
		return
	}
	for _, p := range j.pending {
		_, acked := p.acks[instance]
		if acked || p.expected[instance] != incarnation || now.Sub(p.sentAt) < resendGap(p.resent) {
			continue
		}
		if err := j.b.sendBarrier(p.barrier); err != nil {
			if msg := "cannot send the barrier again"; j.noise.Allow(msg) {
				j.log.Warn().Err(err).Uint64("checkpoint", p.id).Msg(msg)
			}
			continue
		}
		p.resent, p.sentAt = p.resent+1, now
		j.log.Debug().Uint64("checkpoint", p.id).Str("instance", instance).Msg("barrier sent again: the instance has not acked")
	}
}

func (j *job) handleAck(ctx context.Context, a *messages.Ack) {
	// The fields of a dropped ack's log line, built only when it is logged: a logger
	// With them would cost every ack.
	dropped := func() *zerolog.Event {
		return j.log.Debug().Uint64("checkpoint", a.CheckpointID).Str("instance", a.Instance)
	}
	p := j.find(a.CheckpointID)
	if p == nil {
		if j.instances[a.Instance] == a.Incarnation {
			j.noteAck(a)
		}
		j.lateAcks++
		if a.CheckpointID <= j.inherited {
			dropped().Stringer("kind", a.Kind).Msg("ack for a checkpoint of a previous coordinator dropped")
		} else {
			dropped().Stringer("kind", a.Kind).Msg("late ack dropped: checkpoint not pending")
		}
		return
	}
	if inc, ok := p.expected[a.Instance]; !ok || inc != a.Incarnation {
		// A replaced process, or a stranger: counted, and warned about at a bounded rate.
		j.droppedAcks++
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
// by the backend again before <job>.latest moves (every call's deadline is the validity).
func (j *job) complete(ctx context.Context, p *pending) {
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended before the checkpoint could complete")
		return
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	if !j.prevOK {
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
		j.prev, j.prevOK = prev, true
	}
	now := time.Now()
	m := &messages.Manifest{
		Schema:        messages.SchemaVersion,
		Job:           j.name,
		Token:         j.lease.rev,
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
	if j.prev != nil {
		prevID = j.prev.CheckpointID
	}
	if !j.valid(time.Now()) {
		j.fence(ctx, "lease validity ended before the manifest was written; no manifest written")
		return
	}
	err := j.b.writeManifest(cctx, m, prevID)
	if errors.Is(err, errManifestsLost) {
		// m carries every member of its predecessor forward: written as the first manifest
		// of the job, it keeps what this coordinator still knows of them.
		j.manifestsLost(err)
		err = j.b.writeManifest(cctx, m, 0)
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
		j.prevOK = false
		j.abort(ctx, p, messages.AbortStorage, fmt.Sprintf("write manifest: %v", err))
		return
	}
	j.prev = m
	for inst := range p.acks {
		delete(j.left, inst)
	}
	j.markMembers(cctx, m)
	j.remove(p)
	for _, older := range slices.Clone(j.pending) {
		if older.id < p.id {
			j.abort(ctx, older, messages.AbortSubsumed, fmt.Sprintf("checkpoint %d completed first", p.id))
		}
	}
	if j.failures > 0 && j.failed() {
		j.log.Info().Int("failures", j.failures).Msg("job no longer failed: a checkpoint completed")
	}
	j.lastComplete, j.failures = now, 0
	j.completed++
	j.noteCompletion(ctx, p.id, now)
	participants, bytes := p.participants(), m.Bytes()
	j.lastCompleted = &messages.CompletedCheckpoint{
		ID: p.id, ConfigVersion: p.version, TriggeredAt: m.TriggeredAt, CompletedAt: m.CompletedAt,
		Duration: now.Sub(p.triggeredAt).String(), Bytes: bytes, BytesWritten: written, Participants: participants,
	}
	ev := &messages.CheckpointEvent{
		Schema: messages.SchemaVersion, Job: j.name, CheckpointID: p.id, ConfigVersion: p.version,
		Outcome: messages.Completed, TriggeredAt: m.TriggeredAt, FinishedAt: m.CompletedAt,
		Participants: participants, Bytes: bytes, Written: written,
	}
	if err := j.b.publishEvent(cctx, ev); err != nil {
		j.log.Error().Err(err).Uint64("checkpoint", p.id).Msg("cannot publish the completed event")
	}
	j.written = append(j.written, m)
	j.retainCompleted(now)
	j.log.Info().Uint64("checkpoint", p.id).Uint64("config_version", p.version).Str("duration", j.lastCompleted.Duration).
		Uint64("bytes", bytes).Uint64("bytes_written", written).Int("participants", len(participants)).
		Int("members", len(m.Instances)).Msg("checkpoint completed")
	j.finishRemovals(ctx, m)
	j.finishManual(ctx, p, m)
}

// carryForward adds to m every member of the predecessor manifest that did not take part,
// unchanged: it consumed nothing it could ack, so its last state is still exact. Members
// being removed are left out.
func (j *job) carryForward(m *messages.Manifest) {
	if j.prev == nil {
		return
	}
	for inst, s := range j.prev.Instances {
		if _, ok := m.Instances[inst]; ok {
			continue
		}
		if _, ok := j.removals[inst]; ok {
			continue
		}
		s.Checkpoint = s.From(j.prev.CheckpointID)
		if s.AbsentSince.IsZero() {
			s.AbsentSince = j.prev.CompletedAt
			if t, ok := j.left[inst]; ok {
				s.AbsentSince = t.UTC()
			}
		}
		m.Instances[inst] = s
	}
}

func (j *job) abort(ctx context.Context, p *pending, reason messages.AbortReason, detail string) {
	j.remove(p)
	for _, a := range p.acks {
		j.dropped = append(j.dropped, a.Refs()...)
	}
	now := time.Now()
	j.aborted++
	if reason.Counted() {
		j.failures++
	}
	failed := j.failed()
	j.lastAborted = &messages.AbortedCheckpoint{ID: p.id, ConfigVersion: p.version, AbortedAt: now.UTC(), Reason: reason.String(), Detail: detail}
	ev := &messages.CheckpointEvent{
		Schema: messages.SchemaVersion, Job: j.name, CheckpointID: p.id, ConfigVersion: p.version,
		Outcome: messages.Aborted, TriggeredAt: p.triggeredAt.UTC(), FinishedAt: now.UTC(),
		Participants: p.participants(), Reason: reason, Detail: detail, Failed: failed,
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	if err := j.b.publishEvent(cctx, ev); err != nil {
		j.log.Error().Err(err).Uint64("checkpoint", p.id).Msg("cannot publish the aborted event")
	}
	e := j.log.Warn()
	if failed {
		e = j.log.Error()
	}
	e.Uint64("checkpoint", p.id).Stringer("reason", reason).Str("detail", detail).Int("consecutive_failures", j.failures).
		Bool("failed", failed).Msg("checkpoint aborted")
	j.noteAbort(ctx, p.id, reason, detail, now)
	j.failRemovals(func(r *removal) bool { return r.checkpoint == p.id }, codeUnavailable,
		fmt.Sprintf("checkpoint %d, which was to remove the member, aborted (%s: %s); nothing was removed, the member stays", p.id, reason, detail))
	j.abortManual(p, reason, detail, now)
	// Free what the aborted checkpoint uploaded at once (a full store: everything that
	// can go), unless a completion that follows does it (subsumed) or this coordinator no
	// longer leads the job.
	if reason != messages.AbortSubsumed && j.lease.held && ctx.Err() == nil {
		j.retainNow(reason == messages.AbortStorageFull)
	}
}

// stop aborts what is pending when the coordinator shuts down; ctx is already done, so
// the events get a short context of their own.
func (j *job) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, p := range slices.Clone(j.pending) {
		j.abort(ctx, p, messages.AbortCoordinatorChange, "coordinator stopped")
	}
	j.failRemovals(func(*removal) bool { return true }, codeUnavailable, "coordinator stopped; nothing was removed")
	j.failManual("coordinator stopped; the checkpoint did not complete, try again")
}

// failed reports whether consecutive counted failures exceed tolerable_failures.
func (j *job) failed() bool {
	return j.cfg.TolerableFailures >= 0 && j.failures > j.cfg.TolerableFailures
}

func (j *job) find(id uint64) *pending {
	for _, p := range j.pending {
		if p.id == id {
			return p
		}
	}
	return nil
}

func (j *job) remove(p *pending) {
	j.pending = slices.DeleteFunc(j.pending, func(q *pending) bool { return q == p })
}

// liveRefs are the snapshots acked for checkpoints still pending: retention keeps them.
func (j *job) liveRefs() []messages.SnapshotRef {
	var refs []messages.SnapshotRef
	for _, p := range j.pending {
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
