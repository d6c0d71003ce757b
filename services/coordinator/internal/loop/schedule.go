package loop

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// nextTrigger is the scheduling rule: the earliest time the next barrier may be sent,
// max(lastTrigger + interval, lastComplete + min_pause, now). A zero lastTrigger or
// lastComplete does not constrain it. It does not consider max_concurrent; the caller
// sends no barrier while that many checkpoints are pending.
func nextTrigger(cfg messages.CheckpointConfig, lastTrigger, lastComplete, now time.Time) time.Time {
	next := now
	if !lastTrigger.IsZero() {
		next = later(next, lastTrigger.Add(cfg.Interval))
	}
	if !lastComplete.IsZero() {
		next = later(next, lastComplete.Add(cfg.MinPause))
	}
	return next
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// retryLater holds the next barrier back after a failed trigger at now: an interval later,
// at most a second.
func (j *Job) retryLater(now time.Time) {
	j.sched.retryAt = now.Add(min(j.config.cfg.Interval, time.Second))
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

// applyConfig applies a config event the mailbox took: newer than every one taken before.
func (j *Job) applyConfig(ev *messages.ConfigEvent) {
	old := j.config.cfg
	j.config.cfg, j.config.version, j.config.appliedAt = ev.Config, ev.Version, time.Now()
	zlog.Config(j.log.Info().Uint64("version", ev.Version), ev.Config).Stringer("previous_interval", old.Interval).Msg("config applied")
}

// prepareLead is how long before a barrier is due its id is taken from the counter (a
// compare-and-set, one KV round trip, see prepare): a tenth of the interval, at most 50 ms.
func prepareLead(interval time.Duration) time.Duration {
	return min(interval/10, 50*time.Millisecond)
}
