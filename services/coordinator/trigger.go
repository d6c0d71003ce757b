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
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// forwardTriggerWait is how long a standby waits for the lease holder's answer to a
// forwarded trigger: the holder answers when the checkpoint has ended, which takes as
// long as a checkpoint (and the pending ones before it, under max_concurrent).
const forwardTriggerWait = time.Minute

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
	decided := func(out *messages.CheckpointResult, e *loop.Error) {
		release()
		done(out, fromLoop(e))
	}
	if !j.Trigger(qctx, savepoint, decided) {
		decided(nil, &loop.Error{Kind: loop.Unavailable, Msg: "coordinator busy or stopping; no checkpoint was triggered, try again"})
	}
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
