package loop

import (
	"slices"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// view renders the job's status.
func (j *Job) view(now time.Time) messages.Status {
	st := messages.Status{
		Job:                 j.name,
		Coordinator:         j.coordID,
		Holder:              j.lease.Holder,
		Config:              messages.NewConfigView(j.name, j.config.version, j.config.cfg, time.Time{}),
		Instances:           make([]string, 0, len(j.roster.instances)),
		Members:             j.members(),
		Pending:             make([]messages.PendingCheckpoint, 0, len(j.inflight.pending)),
		LastCompleted:       j.stats.lastCompleted,
		LastAborted:         j.stats.lastAborted,
		Completed:           j.stats.completed,
		Aborted:             j.stats.aborted,
		LateAcks:            j.stats.lateAcks,
		DroppedAcks:         j.stats.droppedAcks,
		StaleConfigEvents:   j.mail.staleConfigs.Load(),
		ConsecutiveFailures: j.stats.failures,
		Failed:              j.failed(),
	}
	st.EffectiveInterval = st.Config.Interval
	if j.stats.alarm != nil {
		st.Alarms = append(st.Alarms, j.stats.alarm.view())
	}
	st.Savepoints = j.savepointHolds()
	if j.stored.lost != nil {
		st.Alarms = append(st.Alarms, *j.stored.lost)
	}
	if !j.config.appliedAt.IsZero() {
		t := j.config.appliedAt.UTC()
		st.AppliedAt = &t
	}
	for n := range j.roster.instances {
		st.Instances = append(st.Instances, n)
	}
	slices.Sort(st.Instances)
	switch {
	case !j.lease.Held:
		st.Waiting = "this coordinator does not hold the job's lease"
	case len(j.roster.instances) == 0 && !j.removalDue() && !j.manualDue():
		st.Waiting = "no registered instance"
	case len(j.inflight.pending) >= j.config.cfg.MaxConcurrent:
		st.Waiting = "max_concurrent checkpoints pending"
	default:
		t := j.next(now).UTC()
		st.NextTrigger = &t
	}
	for _, p := range j.inflight.pending {
		acked := make([]string, 0, len(p.acks))
		for n := range p.acks {
			acked = append(acked, n)
		}
		slices.Sort(acked)
		st.Pending = append(st.Pending, messages.PendingCheckpoint{
			ID: p.id, ConfigVersion: p.version, TriggeredAt: p.triggeredAt.UTC(), Deadline: p.deadline.UTC(),
			Expected: p.participants(), Acked: acked, Resent: p.resent,
		})
	}
	return st
}
