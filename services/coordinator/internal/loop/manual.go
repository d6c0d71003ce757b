package loop

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// triggerRequest asks the job's loop for a manual checkpoint, kept as a savepoint when
// savepoint is set; done is called once, from the loop, when the checkpoint has ended or
// the request is refused.
type triggerRequest struct {
	savepoint string
	done      func(*messages.CheckpointResult, *Error)
}

// manualTrigger is a trigger request recorded by the loop.
type manualTrigger struct {
	triggerRequest
	// checkpoint is the checkpoint triggered for the request; 0 until it is triggered.
	checkpoint uint64
}

// ensurePrev reads the newest manifest unless the loop already holds it.
func (j *Job) ensurePrev(ctx context.Context) error {
	if j.stored.prevOK {
		return nil
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	prev, err := j.latest(cctx)
	if err != nil {
		return err
	}
	j.stored.prev, j.stored.prevOK = prev, true
	return nil
}

// requestTrigger records a manual checkpoint request; the next barrier, sent as soon as
// max_concurrent allows, serves it, and the request is answered when that checkpoint ends.
func (j *Job) requestTrigger(ctx context.Context, req triggerRequest) {
	if e := j.refusal(ctx, "no checkpoint was triggered, try again", "no checkpoint was triggered"); e != nil {
		req.done(nil, e)
		return
	}
	if len(j.members()) == 0 {
		req.done(nil, &Error{NotFound, fmt.Sprintf("job %s has no members: no registered instance and no completed checkpoint holds one; nothing to checkpoint", j.name)})
		return
	}
	if req.savepoint != "" {
		if err := j.ensureSavepoints(ctx); err != nil {
			req.done(nil, &Error{Unavailable, fmt.Sprintf("cannot read the savepoints of job %s: %v; no checkpoint was triggered", j.name, err)})
			return
		}
		if m, ok := j.stored.savepoints[req.savepoint]; ok {
			req.done(nil, &Error{Conflict, fmt.Sprintf("savepoint %s of job %s already exists (checkpoint %d); delete it first or choose another name", req.savepoint, j.name, m.CheckpointID)})
			return
		}
		for _, t := range j.inflight.manual {
			if t.savepoint == req.savepoint {
				req.done(nil, &Error{Conflict, fmt.Sprintf("savepoint %s of job %s is being taken by another request; choose another name", req.savepoint, j.name)})
				return
			}
		}
	}
	j.inflight.manual = append(j.inflight.manual, &manualTrigger{triggerRequest: req})
	j.log.Info().Str("savepoint", req.savepoint).Msg("manual checkpoint requested")
}

// manualDue reports whether a manual request waits for a checkpoint to be triggered.
func (j *Job) manualDue() bool {
	for _, t := range j.inflight.manual {
		if t.checkpoint == 0 {
			return true
		}
	}
	return false
}

// attachManual lets checkpoint p serve the waiting manual requests: every plain one and
// the oldest savepoint request (a checkpoint is one savepoint at most; the others wait for
// the next barrier).
func (j *Job) attachManual(p *pending) {
	for _, t := range j.inflight.manual {
		if t.checkpoint != 0 || (t.savepoint != "" && p.savepoint != "") {
			continue
		}
		t.checkpoint = p.id
		if t.savepoint != "" {
			p.savepoint = t.savepoint
		}
	}
}

// finishManual answers the manual requests checkpoint p served, once its manifest m is
// written: a savepoint request after the savepoint is stored as well.
func (j *Job) finishManual(ctx context.Context, p *pending, m *messages.Manifest) {
	waiters := j.takeManual(p.id)
	if len(waiters) == 0 {
		return
	}
	c := j.stats.lastCompleted
	res := messages.CheckpointResult{
		Job: j.name, ID: p.id, Outcome: messages.Completed.String(), ConfigVersion: c.ConfigVersion,
		TriggeredAt: c.TriggeredAt, FinishedAt: c.CompletedAt, Duration: c.Duration,
		Bytes: c.Bytes, BytesWritten: c.BytesWritten, Participants: c.Participants,
	}
	var spErr *Error
	if p.savepoint != "" {
		spErr = j.storeSavepoint(ctx, m)
	}
	for _, t := range waiters {
		r := res
		if t.savepoint != "" {
			if spErr != nil {
				t.done(nil, spErr)
				continue
			}
			r.Savepoint = t.savepoint
		}
		t.done(&r, nil)
	}
}

// abortManual answers the manual requests checkpoint p served: it was aborted.
func (j *Job) abortManual(p *pending, reason messages.AbortReason, detail string, at time.Time) {
	for _, t := range j.takeManual(p.id) {
		t.done(&messages.CheckpointResult{
			Job: j.name, ID: p.id, Outcome: messages.Aborted.String(), Reason: reason.String(), Detail: detail,
			Savepoint: t.savepoint, ConfigVersion: p.version, TriggeredAt: p.triggeredAt.UTC(), FinishedAt: at.UTC(),
			Duration: at.Sub(p.triggeredAt).String(), Participants: p.participants(),
		}, nil)
	}
}

// failManual refuses every manual request still waiting or in flight: the loop stops
// coordinating the job.
func (j *Job) failManual(msg string) {
	for _, t := range j.inflight.manual {
		t.done(nil, &Error{Unavailable, msg})
	}
	j.inflight.manual = nil
}

// takeManual removes and returns the manual requests checkpoint id served.
func (j *Job) takeManual(id uint64) []*manualTrigger {
	var out, rest []*manualTrigger
	for _, t := range j.inflight.manual {
		if t.checkpoint == id {
			out = append(out, t)
		} else {
			rest = append(rest, t)
		}
	}
	j.inflight.manual = rest
	return out
}
