package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// forwardTriggerWait is how long a standby waits for the lease holder's answer to a
// forwarded trigger: the holder answers when the checkpoint has ended, which takes as
// long as a checkpoint (and the pending ones before it, under max_concurrent).
const forwardTriggerWait = time.Minute

// triggerRequest asks the job's loop for a manual checkpoint, kept as a savepoint when
// savepoint is set; done is called once, from the loop, when the checkpoint has ended or
// the request is refused.
type triggerRequest struct {
	savepoint string
	done      func(*messages.CheckpointResult, *replyError)
}

// manualTrigger is a trigger request recorded by the loop.
type manualTrigger struct {
	triggerRequest
	// checkpoint is the checkpoint triggered for the request; 0 until it is triggered.
	checkpoint uint64
}

// parseTriggerRequest decodes a trigger body strictly: empty, or a JSON object whose only
// field is savepoint, a valid savepoint name.
func parseTriggerRequest(data []byte) (messages.TriggerRequest, error) {
	var req messages.TriggerRequest
	if len(bytes.TrimSpace(data)) == 0 {
		return req, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return req, errors.New(`the body must be empty (a plain checkpoint) or a JSON object {"savepoint":"<name>"}`)
	}
	for name := range fields {
		if name != "savepoint" {
			return req, fmt.Errorf("unknown field %q; allowed: savepoint", name)
		}
	}
	raw, ok := fields["savepoint"]
	if !ok {
		return req, nil
	}
	if err := json.Unmarshal(raw, &req.Savepoint); err != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return req, fmt.Errorf("savepoint must be a string, got %s", raw)
	}
	if err := messages.ValidateName("savepoint", req.Savepoint); err != nil {
		return messages.TriggerRequest{}, err
	}
	return req, nil
}

// onTrigger answers cairn.checkpoint.trigger.<job> at the job's lease holder (see
// atHolder), when the checkpoint triggered for it has ended.
func (s *Service) onTrigger(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 2)
	req, e := parseHolderCall(name, r.Data(), parseTriggerRequest)
	if e != nil {
		respondError(r, e.code, e.msg)
		return
	}
	s.atHolder(ctx, r, holderRequest{
		job: name, what: "trigger", unchanged: "no checkpoint was triggered", wait: forwardTriggerWait,
		direct: func(holder string) string { return s.cfg.Subjects.CoordinatorCheckpoint(holder, "trigger", name) },
		local:  func(done answerFunc) { s.triggerLocally(ctx, name, req.Savepoint, done) },
	})
}

// onDirectTrigger answers a trigger forwarded to this coordinator by a standby.
func (s *Service) onDirectTrigger(ctx context.Context, m *nats.Msg) {
	name := s.cfg.Subjects.Token(m.Subject, 4)
	s.onDirect(m, func(done answerFunc) {
		req, e := parseHolderCall(name, m.Data, parseTriggerRequest)
		if e != nil {
			done(nil, e)
			return
		}
		s.triggerLocally(ctx, name, req.Savepoint, done)
	})
}

// triggerLocally hands a trigger request to the job's loop; done is called here when the
// loop cannot take it.
func (s *Service) triggerLocally(ctx context.Context, name, savepoint string, done answerFunc) {
	j, release := s.wakeFor(ctx, name, "no checkpoint was triggered", func(e *replyError) { done(nil, e) })
	if j == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req := triggerRequest{savepoint: savepoint, done: func(out *messages.CheckpointResult, e *replyError) {
		release()
		done(out, e)
	}}
	if !send(qctx, j.triggers, req) {
		req.done(nil, &replyError{codeUnavailable, "coordinator busy or stopping; no checkpoint was triggered, try again"})
	}
}

// ensurePrev reads the newest manifest unless the loop already holds it.
func (j *job) ensurePrev(ctx context.Context) error {
	if j.prevOK {
		return nil
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	prev, err := j.latest(cctx)
	if err != nil {
		return err
	}
	j.prev, j.prevOK = prev, true
	return nil
}

// requestTrigger records a manual checkpoint request; the next barrier, sent as soon as
// max_concurrent allows, serves it, and the request is answered when that checkpoint ends.
func (j *job) requestTrigger(ctx context.Context, req triggerRequest) {
	if !j.lease.held {
		req.done(nil, &replyError{codeUnavailable, fmt.Sprintf("coordinator %s does not hold the lease of job %s; no checkpoint was triggered, try again", j.coordID, j.name)})
		return
	}
	if err := j.ensurePrev(ctx); err != nil {
		req.done(nil, &replyError{codeUnavailable, fmt.Sprintf("cannot read the latest manifest of job %s: %v; no checkpoint was triggered", j.name, err)})
		return
	}
	if len(j.members()) == 0 {
		req.done(nil, &replyError{codeNotFound, fmt.Sprintf("job %s has no members: no registered instance and no completed checkpoint holds one; nothing to checkpoint", j.name)})
		return
	}
	if req.savepoint != "" {
		if err := j.ensureSavepoints(ctx); err != nil {
			req.done(nil, &replyError{codeUnavailable, fmt.Sprintf("cannot read the savepoints of job %s: %v; no checkpoint was triggered", j.name, err)})
			return
		}
		if m, ok := j.savepoints[req.savepoint]; ok {
			req.done(nil, &replyError{codeConflict, fmt.Sprintf("savepoint %s of job %s already exists (checkpoint %d); delete it first or choose another name", req.savepoint, j.name, m.CheckpointID)})
			return
		}
		for _, t := range j.manual {
			if t.savepoint == req.savepoint {
				req.done(nil, &replyError{codeConflict, fmt.Sprintf("savepoint %s of job %s is being taken by another request; choose another name", req.savepoint, j.name)})
				return
			}
		}
	}
	j.manual = append(j.manual, &manualTrigger{triggerRequest: req})
	j.log.Info().Str("savepoint", req.savepoint).Msg("manual checkpoint requested")
}

// manualDue reports whether a manual request waits for a checkpoint to be triggered.
func (j *job) manualDue() bool {
	for _, t := range j.manual {
		if t.checkpoint == 0 {
			return true
		}
	}
	return false
}

// attachManual lets checkpoint p serve the waiting manual requests: every plain one and
// the oldest savepoint request (a checkpoint is one savepoint at most; the others wait for
// the next barrier).
func (j *job) attachManual(p *pending) {
	for _, t := range j.manual {
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
func (j *job) finishManual(ctx context.Context, p *pending, m *messages.Manifest) {
	waiters := j.takeManual(p.id)
	if len(waiters) == 0 {
		return
	}
	c := j.lastCompleted
	res := messages.CheckpointResult{
		Job: j.name, ID: p.id, Outcome: messages.Completed.String(), ConfigVersion: c.ConfigVersion,
		TriggeredAt: c.TriggeredAt, FinishedAt: c.CompletedAt, Duration: c.Duration,
		Bytes: c.Bytes, BytesWritten: c.BytesWritten, Participants: c.Participants,
	}
	var spErr *replyError
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
func (j *job) abortManual(p *pending, reason messages.AbortReason, detail string, at time.Time) {
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
func (j *job) failManual(msg string) {
	for _, t := range j.manual {
		t.done(nil, &replyError{codeUnavailable, msg})
	}
	j.manual = nil
}

// takeManual removes and returns the manual requests checkpoint id served.
func (j *job) takeManual(id uint64) []*manualTrigger {
	var out, rest []*manualTrigger
	for _, t := range j.manual {
		if t.checkpoint == id {
			out = append(out, t)
		} else {
			rest = append(rest, t)
		}
	}
	j.manual = rest
	return out
}

// addCheckpointEndpoints adds the manual checkpoint and savepoint endpoints: trigger,
// list and delete.
func (s *Service) addCheckpointEndpoints(ctx context.Context, svc micro.Service) error {
	for _, ep := range []struct {
		name, subject string
		h             func(context.Context, micro.Request)
	}{
		{"checkpoint-trigger", s.cfg.Subjects.CheckpointTrigger("*"), s.onTrigger},
		{"checkpoint-list", s.cfg.Subjects.CheckpointList("*"), s.onList},
		{"checkpoint-delete", s.cfg.Subjects.CheckpointDelete("*"), s.onDelete},
	} {
		h := ep.h
		if err := svc.AddEndpoint(ep.name, micro.HandlerFunc(func(r micro.Request) { h(ctx, r) }), micro.WithEndpointSubject(ep.subject)); err != nil {
			return fmt.Errorf("add %s endpoint: %w", ep.name, err)
		}
	}
	return nil
}

// subscribeCheckpointDirect subscribes to the direct subjects standbys forward triggers
// and savepoint deletions to; stop unsubscribes.
func (s *Service) subscribeCheckpointDirect(ctx context.Context) (stop func(), err error) {
	var subs []*nats.Subscription
	stop = func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}
	for kind, h := range map[string]func(context.Context, *nats.Msg){"trigger": s.onDirectTrigger, "delete": s.onDirectDelete} {
		sub, err := s.nc.Subscribe(s.cfg.Subjects.CoordinatorCheckpoint(s.cfg.ID, kind, "*"), func(m *nats.Msg) { h(ctx, m) })
		if err != nil {
			stop()
			return nil, fmt.Errorf("subscribe to direct checkpoint %s requests: %w", kind, err)
		}
		subs = append(subs, sub)
	}
	return stop, nil
}
