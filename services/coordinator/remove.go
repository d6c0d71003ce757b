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

// onRemove answers cairn.job.members.remove.<job> at the job's lease holder (see
// atHolder): only the holder removes members.
func (s *Service) onRemove(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 3)
	req, e := parseHolderCall(name, r.Data(), parseRemoveRequest)
	if e != nil {
		respondError(r, e.code, e.msg)
		return
	}
	s.atHolder(ctx, r, holderRequest{
		job: name, what: "removal", unchanged: "nothing was removed", wait: forwardRemovalWait,
		direct: func(holder string) string { return s.cfg.Subjects.CoordinatorMembersRemove(holder, name) },
		local:  func(done answerFunc) { s.removeLocally(ctx, name, req.Instance, removalAnswer(done)) },
	})
}

// onDirectRemove answers a member removal forwarded to this coordinator by a standby.
func (s *Service) onDirectRemove(ctx context.Context, m *nats.Msg) {
	name := s.cfg.Subjects.Token(m.Subject, 4)
	s.onDirect(m, func(done answerFunc) {
		req, e := parseHolderCall(name, m.Data, parseRemoveRequest)
		if e != nil {
			done(nil, e)
			return
		}
		s.removeLocally(ctx, name, req.Instance, removalAnswer(done))
	})
}

// removalAnswer adapts done to the loop's removal callback.
func removalAnswer(done answerFunc) func(*messages.MemberRemoval, *replyError) {
	return func(out *messages.MemberRemoval, e *replyError) { done(out, e) }
}

// removeLocally hands a removal to the job's loop, which calls done when it has been
// decided; done is called here when the loop cannot take it. A parked job is woken until
// the removal is decided.
func (s *Service) removeLocally(ctx context.Context, name, instance string, done func(*messages.MemberRemoval, *replyError)) {
	j, release := s.wakeFor(ctx, name, "nothing was removed", func(e *replyError) { done(nil, e) })
	if j == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	decided := func(out *messages.MemberRemoval, e *loop.Error) {
		release()
		done(out, fromLoop(e))
	}
	if !j.RemoveMember(qctx, instance, decided) {
		decided(nil, &loop.Error{Kind: loop.Unavailable, Msg: "coordinator busy or stopping; nothing was removed, try again"})
	}
}
