package loop

import (
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// nextTrigger is the scheduling rule: the earliest time the next barrier may be sent,
// max(lastTrigger + interval, lastComplete + min_pause, now). A zero lastTrigger or
// lastComplete does not constrain it. It does not consider max_concurrent; the caller
// sends no barrier while that many checkpoints are pending.
func nextTrigger(cfg messages.Config, lastTrigger, lastComplete, now time.Time) time.Time {
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
