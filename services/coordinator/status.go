package coordinator

import (
	"slices"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// view renders the job's status.
func (j *job) view(now time.Time) messages.Status {
	st := messages.Status{
		Job:                 j.name,
		Coordinator:         j.coordID,
		Holder:              j.lease.holder,
		Config:              messages.NewConfigView(j.name, j.version, j.cfg, time.Time{}),
		Instances:           make([]string, 0, len(j.instances)),
		Members:             j.members(),
		Pending:             make([]messages.PendingCheckpoint, 0, len(j.pending)),
		LastCompleted:       j.lastCompleted,
		LastAborted:         j.lastAborted,
		Completed:           j.completed,
		Aborted:             j.aborted,
		LateAcks:            j.lateAcks,
		DroppedAcks:         j.droppedAcks,
		StaleConfigEvents:   j.staleConfigs + j.mail.staleConfigs.Load(),
		ConsecutiveFailures: j.failures,
		Failed:              j.failed(),
	}
	st.EffectiveInterval = st.Config.Interval
	if j.alarm != nil {
		st.Alarms = append(st.Alarms, j.alarm.view())
	}
	st.Savepoints = j.savepointHolds()
	if j.lost != nil {
		st.Alarms = append(st.Alarms, *j.lost)
	}
	if !j.appliedAt.IsZero() {
		t := j.appliedAt.UTC()
		st.AppliedAt = &t
	}
	for n := range j.instances {
		st.Instances = append(st.Instances, n)
	}
	slices.Sort(st.Instances)
	switch {
	case !j.lease.held:
		st.Waiting = "this coordinator does not hold the job's lease"
	case len(j.instances) == 0 && !j.removalDue() && !j.manualDue():
		st.Waiting = "no registered instance"
	case len(j.pending) >= j.cfg.MaxConcurrent:
		st.Waiting = "max_concurrent checkpoints pending"
	default:
		t := j.next(now).UTC()
		st.NextTrigger = &t
	}
	for _, p := range j.pending {
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
