package loop

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// alarmAfter is how many checkpoints in a row one abort reason must end for the job's
// alarm to be raised, whatever tolerable_failures says: a persistent condition (a full
// snapshot store, a member that always times out) is then reported once, loudly, instead
// of only counted.
const alarmAfter = 5

// abortRun is a run of consecutive aborts with one reason since the last completion; the
// job's aborts_repeated alarm, once raised, is the run that raised it.
type abortRun struct {
	reason messages.AbortReason
	count  int
	since  time.Time
	// last is the newest checkpoint of the run, detail its abort's detail.
	last   uint64
	detail string
}

// view is the run as an aborts_repeated alarm in status.
func (r *abortRun) view() messages.Alarm {
	return messages.Alarm{
		Kind: messages.AlarmAbortsRepeated, Since: r.since.UTC(),
		Detail: fmt.Sprintf("%s ended the last %d checkpoints in a row (checkpoint %d: %s); it clears when a checkpoint completes",
			r.reason, r.count, r.last, r.detail),
		Reason: r.reason.String(), Count: r.count, Checkpoint: r.last,
	}
}

// event is the run as an aborts_repeated alarm event of state at checkpoint id.
func (r *abortRun) event(j *Job, state messages.AlarmState, id uint64, now time.Time) *messages.AlarmEvent {
	return &messages.AlarmEvent{
		Schema: messages.SchemaVersion, Job: j.name, Kind: messages.AlarmAbortsRepeated, State: state, At: now.UTC(),
		Since: r.since.UTC(), Reason: r.reason, Count: r.count, Checkpoint: id, Detail: r.detail, Coordinator: j.coordID,
	}
}

// noteAbort extends the run of aborts with checkpoint id's abort, or starts a new one
// with its reason, and raises the alarm when a run reaches alarmAfter (a run of another
// reason then replaces the alarm). subsumed is no failure: it neither extends nor breaks
// a run.
func (j *Job) noteAbort(ctx context.Context, id uint64, reason messages.AbortReason, detail string, now time.Time) {
	if reason == messages.AbortSubsumed {
		return
	}
	if j.stats.aborts == nil || j.stats.aborts.reason != reason {
		j.stats.aborts = &abortRun{reason: reason, since: now}
	}
	j.stats.aborts.count++
	j.stats.aborts.last, j.stats.aborts.detail = id, detail
	if j.stats.aborts.count != alarmAfter {
		return
	}
	j.stats.alarm = j.stats.aborts
	j.log.Error().Stringer("reason", reason).Int("count", j.stats.aborts.count).Time("since", j.stats.aborts.since).Uint64("checkpoint", id).Str("detail", detail).
		Msg("alarm raised: the same abort reason ended several checkpoints in a row")
	j.publishAlarm(ctx, j.stats.aborts.event(j, messages.AlarmRaised, id, now))
}

// noteCompletion of checkpoint id ends the run of aborts and clears a raised alarm.
func (j *Job) noteCompletion(ctx context.Context, id uint64, now time.Time) {
	j.stats.aborts = nil
	a := j.stats.alarm
	if a == nil {
		return
	}
	j.stats.alarm = nil
	j.log.Info().Stringer("reason", a.reason).Int("count", a.count).Uint64("checkpoint", id).Msg("alarm cleared: a checkpoint completed")
	j.publishAlarm(ctx, a.event(j, messages.AlarmCleared, id, now))
}

// publishAlarm publishes an alarm event; a failure is logged (status still shows the
// alarm).
func (j *Job) publishAlarm(ctx context.Context, e *messages.AlarmEvent) {
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	if err := j.b.PublishAlarm(cctx, e); err != nil {
		j.log.Error().Err(err).Str("kind", string(e.Kind)).Stringer("state", e.State).Msg("cannot publish the alarm event")
	}
}
