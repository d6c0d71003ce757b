package coordinator

import (
	"context"
	"time"
)

// callCap bounds every backend call of a job's loop, even while the lease is valid for
// longer; unheldCap bounds the calls made without the lease (the aborted events published
// after losing it, which change no state another coordinator relies on).
const (
	callCap   = 5 * time.Second
	unheldCap = time.Second
)

// callCtx derives the context of one backend call: while the lease is held its deadline
// is the lease's validity (at most callCap away), so a call cannot outlive the lease it
// acts under.
func (j *job) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	now := time.Now()
	if !j.lease.held {
		return context.WithDeadline(ctx, now.Add(unheldCap))
	}
	deadline := now.Add(callCap)
	if j.lease.validUntil.Before(deadline) {
		deadline = j.lease.validUntil
	}
	return context.WithDeadline(ctx, deadline)
}

// valid reports whether the loop may act under its lease at now: held, not past its
// validity, and not reported lost (or lost and retaken) by the keeper in a state the loop
// has not taken from its mailbox yet.
func (j *job) valid(now time.Time) bool {
	if !j.lease.held || !now.Before(j.lease.validUntil) {
		return false
	}
	if l, ok := j.mail.pendingLease(); ok && (!l.held || l.tenure != j.lease.tenure) {
		return false
	}
	return true
}

// drain takes what the mailbox's slots hold: the lease state first (it may fence), then
// the newest config event, then the registration updates.
func (j *job) drain(ctx context.Context) {
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

// expired returns an error when ctx's deadline (the lease's validity for a job's calls)
// has passed, even if its timer has not fired yet: a backend checks it right before a
// write another coordinator must never see from a fenced holder.
func expired(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return ctx.Err()
}
