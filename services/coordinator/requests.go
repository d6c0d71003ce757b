package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
	"github.com/cairn-stream/cairn/services/coordinator/internal/store"
)

// forwardRemovalWait is how long a standby waits for the lease holder's answer to a
// forwarded member removal: the holder answers once a checkpoint has written a manifest
// without the member, which takes as long as a checkpoint.
const forwardRemovalWait = 30 * time.Second

// parseRemoveRequest decodes a member removal body strictly: a JSON object with exactly
// one field, instance, a valid instance name.
func parseRemoveRequest(data []byte) (messages.MemberRemoveRequest, error) {
	var req messages.MemberRemoveRequest
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return req, fmt.Errorf(`the body must be a JSON object {"instance":"<instance id>"}`)
	}
	for name := range fields {
		if name != "instance" {
			return req, fmt.Errorf("unknown field %q; allowed: instance", name)
		}
	}
	raw, ok := fields["instance"]
	if !ok {
		return req, errors.New(`instance is required: {"instance":"<instance id>"}`)
	}
	if err := json.Unmarshal(raw, &req.Instance); err != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return req, fmt.Errorf("instance must be a string, got %s", raw)
	}
	if err := messages.ValidateName("instance", req.Instance); err != nil {
		return req, err
	}
	return req, nil
}

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

// parseSavepointRequest decodes a savepoint deletion body strictly: a JSON object with
// exactly one field, savepoint, a valid savepoint name.
func parseSavepointRequest(data []byte) (messages.SavepointRequest, error) {
	req, err := parseTriggerRequest(data)
	if err == nil && req.Savepoint == "" {
		err = errors.New(`savepoint is required: {"savepoint":"<name>"}`)
	}
	if err != nil && len(bytes.TrimSpace(data)) == 0 {
		err = errors.New(`the body must be a JSON object {"savepoint":"<name>"}`)
	}
	return messages.SavepointRequest{Savepoint: req.Savepoint}, err
}

// acceptStatus serves a status request: the job's status as this replica's loop (or
// registry, for a parked job) sees it. The body is ignored.
func (s *Service) acceptStatus(ctx context.Context, _ *endpoint, job string, _ []byte) (func(answerFunc), *reply.Coded) {
	return func(done answerFunc) {
		st, code, msg := s.localStatus(ctx, job)
		if code != "" {
			done(nil, reply.New(code, msg))
			return
		}
		done(st, nil)
	}, nil
}

// acceptFunc checks a request's body and returns what serves the request here; a bad
// body is a 400.
type acceptFunc func(ctx context.Context, ep *endpoint, job string, body []byte) (serve func(answerFunc), e *reply.Coded)

// atLoop is the acceptFunc of a request that the job's loop serves at the lease holder:
// parse checks the body, and call hands the parsed request to the loop, which calls
// decided once when it has decided it (a removal once a manifest without the member is
// written, a trigger when its checkpoint has ended).
func atLoop[R, T any](s *Service, parse func([]byte) (R, error),
	call func(ctx context.Context, j *loop.Job, req R, decided func(T, *loop.Error)) bool,
) acceptFunc {
	return func(ctx context.Context, ep *endpoint, job string, body []byte) (func(answerFunc), *reply.Coded) {
		req, err := parse(body)
		if err != nil {
			return nil, badRequest(err)
		}
		return func(done answerFunc) {
			s.toLoop(ctx, job, ep.unchanged, done, func(qctx context.Context, j *loop.Job, decided func(any, *loop.Error)) bool {
				return call(qctx, j, req, func(out T, e *loop.Error) { decided(out, e) })
			})
		}, nil
	}
}

// removeMember, trigger and deleteSavepoint hand a parsed request to the job's loop.
func removeMember(ctx context.Context, j *loop.Job, r messages.MemberRemoveRequest, d func(*messages.MemberRemoval, *loop.Error)) bool {
	return j.RemoveMember(ctx, r.Instance, d)
}

func trigger(ctx context.Context, j *loop.Job, r messages.TriggerRequest, d func(*messages.CheckpointResult, *loop.Error)) bool {
	return j.Trigger(ctx, r.Savepoint, d)
}

func deleteSavepoint(ctx context.Context, j *loop.Job, r messages.SavepointRequest, d func(*messages.SavepointDeleted, *loop.Error)) bool {
	return j.DeleteSavepoint(ctx, r.Savepoint, d)
}

// acceptList serves a checkpoint listing from the manifest bucket, which every replica
// reads alike: no forwarding to the lease holder. It takes no body (or {}).
func (s *Service) acceptList(ctx context.Context, _ *endpoint, job string, body []byte) (func(answerFunc), *reply.Coded) {
	if body := bytes.TrimSpace(body); len(body) > 0 && !bytes.Equal(body, []byte("{}")) {
		return nil, reply.New(reply.BadRequest, fmt.Sprintf("the list request takes no body (or {}); got %q", body))
	}
	if s.lookup(job) == nil {
		return nil, reply.New(reply.NotFound, fmt.Sprintf("unknown job %q: it has no config and no registered instance", job))
	}
	return func(done answerFunc) {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		list, err := store.ListCheckpoints(lctx, s.nc, s.res.Manifests, job)
		if err != nil {
			done(nil, reply.New(reply.Unavailable, fmt.Sprintf("cannot list the checkpoints of job %s: %v", job, err)))
			return
		}
		done(list, nil)
	}, nil
}

// toLoop hands a request that only the lease holder answers to the job's loop (call),
// keeping the job running until the loop has decided it (a parked job is woken); done is
// called here when the loop cannot take it.
func (s *Service) toLoop(ctx context.Context, job, unchanged string, done answerFunc,
	call func(ctx context.Context, j *loop.Job, decided func(any, *loop.Error)) bool,
) {
	j, release := s.wakeFor(ctx, job, unchanged, func(e *reply.Coded) { done(nil, e) })
	if j == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	decided := func(out any, e *loop.Error) {
		release()
		if e != nil {
			done(nil, fromLoop(e))
			return
		}
		done(out, nil)
	}
	if !call(qctx, j, decided) {
		decided(nil, &loop.Error{Kind: loop.Unavailable, Msg: "coordinator busy or stopping; " + unchanged + ", try again"})
	}
}
