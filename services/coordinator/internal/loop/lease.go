package loop

import (
	"context"
	"time"
)

// CallCap bounds every Backend call of a job's loop, even while the lease is valid for
// longer; unheldCap bounds the calls made without the lease (the aborted events published
// after losing it, which change no state another coordinator relies on).
const (
	CallCap   = 5 * time.Second
	unheldCap = time.Second
)

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

// drain takes what the mailbox's slots hold: the lease state first (it may fence), then
// the newest config event, then the registration updates.
func (j *Job) drain(ctx context.Context) {
	lease, config, regs := j.mail.take()
	if lease != nil {
		j.setLease(ctx, *lease)
	}
	if config != nil {
		j.applyConfig(config)
	}
	for _, r := range regs {
		j.register(ctx, r)
	}
}
