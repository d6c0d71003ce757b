package loop

import (
	"context"
	"slices"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// CallCap bounds every Backend call of a job's loop, even while the lease is valid for
// longer.
const CallCap = 5 * time.Second

// unheldCap bounds the calls made without the lease (the aborted events published after
// losing it, which change no state another coordinator relies on).
const unheldCap = time.Second

// callCtx derives the context of one Backend call: while the lease is held its deadline
// is the lease's validity (at most CallCap away), so a call cannot outlive the lease it
// acts under.
func (j *Job) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	now := time.Now()
	if !j.lease.Held {
		return context.WithDeadline(ctx, now.Add(unheldCap))
	}
	deadline := now.Add(CallCap)
	if j.lease.ValidUntil.Before(deadline) {
		deadline = j.lease.ValidUntil
	}
	return context.WithDeadline(ctx, deadline)
}

// valid reports whether the loop may act under its lease at now: held, not past its
// validity, and not reported lost (or lost and retaken) by the keeper in a state the loop
// has not taken from its mailbox yet.
func (j *Job) valid(now time.Time) bool {
	if !j.lease.Held || !now.Before(j.lease.ValidUntil) {
		return false
	}
	if l, ok := j.mail.pendingLease(); ok && (!l.Held || l.Tenure != j.lease.Tenure) {
		return false
	}
	return true
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

// Lease is what the lease keeper tells the loop: whether this coordinator holds the job's
// lease, until when it may act on it, and who holds it. Rev is the lease key's revision at
// the last take or renewal: the fencing token of barriers and manifests (KV revisions only
// grow, so a later holder's token is always higher). Tenure is the revision at which this
// holder acquired the lease; a different tenure is a new take-over.
type Lease struct {
	// Held is set while this coordinator holds the lease.
	Held bool
	// ValidUntil is when this coordinator must stop acting on the lease: a margin before
	// the bucket could expire it.
	ValidUntil time.Time
	// Holder is the coordinator that holds the lease, when known.
	Holder string
	// Rev is the fencing token; Tenure the revision the lease was acquired at.
	Rev, Tenure uint64
}
