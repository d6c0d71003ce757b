package coordinator

import (
	"context"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// alarmAfter is how many checkpoints in a row one abort reason must end for the job's
// alarm to be raised, whatever tolerable_failures says: a persistent condition (a full
// snapshot store, a member that always times out) is then reported once, loudly, instead
// of only counted.
const alarmAfter = 5

// abortRun is a run of consecutive aborts with one reason since the last completion; the
// job's alarm, once raised, is the run that raised it.
type abortRun struct {
	reason messages.AbortReason
	count  int
	since  time.Time
	// last is the newest checkpoint of the run, detail its abort's detail.
	last   uint64
	detail string
	// raisedAt is when the run raised the alarm (zero for a run that has not).
	raisedAt time.Time
}

// view is the run as an alarm in status.
func (r *abortRun) view() *messages.Alarm {
	return &messages.Alarm{Reason: r.reason.String(), Count: r.count, Since: r.since.UTC(), RaisedAt: r.raisedAt.UTC(), LastCheckpoint: r.last, Detail: r.detail}
}

// event is the run as an alarm event of kind at checkpoint id.
func (r *abortRun) event(j *job, kind messages.AlarmKind, id uint64, now time.Time) *messages.AlarmEvent {
	return &messages.AlarmEvent{
		Schema: messages.SchemaVersion, Job: j.name, Kind: kind, At: now.UTC(), Reason: r.reason, Count: r.count,
		Since: r.since.UTC(), Checkpoint: id, Detail: r.detail, Coordinator: j.coordID,
	}
}

// noteAbort extends the run of aborts with checkpoint id's abort, or starts a new one
// with its reason, and raises the alarm when a run reaches alarmAfter (a run of another
// reason then replaces the alarm). subsumed is no failure: it neither extends nor breaks
// a run.
func (j *job) noteAbort(ctx context.Context, id uint64, reason messages.AbortReason, detail string, now time.Time) {
	if reason == messages.AbortSubsumed {
		return
	}
	if j.aborts == nil || j.aborts.reason != reason {
		j.aborts = &abortRun{reason: reason, since: now}
	}
	j.aborts.count++
	j.aborts.last, j.aborts.detail = id, detail
	if j.aborts.count != alarmAfter {
		return
	}
	j.aborts.raisedAt = now
	j.alarm = j.aborts
	j.log.Error().Stringer("reason", reason).Int("count", j.aborts.count).Time("since", j.aborts.since).Uint64("checkpoint", id).Str("detail", detail).
		Msg("alarm raised: the same abort reason ended several checkpoints in a row")
	j.publishAlarm(ctx, j.aborts.event(j, messages.AlarmRaised, id, now))
}

// noteCompletion of checkpoint id ends the run of aborts and clears a raised alarm.
func (j *job) noteCompletion(ctx context.Context, id uint64, now time.Time) {
	j.aborts = nil
	a := j.alarm
	if a == nil {
		return
	}
	j.alarm = nil
	j.log.Info().Stringer("reason", a.reason).Int("count", a.count).Uint64("checkpoint", id).Msg("alarm cleared: a checkpoint completed")
	j.publishAlarm(ctx, a.event(j, messages.AlarmCleared, id, now))
}

// publishAlarm publishes an alarm event; a failure is logged (status still shows the
// alarm).
func (j *job) publishAlarm(ctx context.Context, e *messages.AlarmEvent) {
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	if err := j.b.publishAlarm(cctx, e); err != nil {
		j.log.Error().Err(err).Stringer("kind", e.Kind).Msg("cannot publish the alarm event")
	}
}
