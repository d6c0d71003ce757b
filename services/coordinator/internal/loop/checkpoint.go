package loop

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/retry"
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
func resendGap(n int) time.Duration { return retry.Doubling(resendAfter, n, resendMaxGap) }

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
