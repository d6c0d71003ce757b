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

// onRemove answers cairn.job.members.remove.<job>. Any replica may receive it (micro's
// queue group); only the lease holder removes members, so a standby forwards the request
// to the holder's direct subject and relays its answer.
func (s *Service) onRemove(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 3)
	if err := messages.ValidateName("job", name); err != nil {
		respondError(r, codeBadRequest, err.Error())
		return
	}
	req, err := parseRemoveRequest(r.Data())
	if err != nil {
		respondError(r, codeBadRequest, err.Error())
		return
	}
	st, code, msg := s.localStatus(ctx, name)
	if code == "" && st.Idle && st.Holder == "" {
		// A parked job: its preferred replica wakes it for the removal.
		st.Holder = st.Preferred
	}
	switch {
	case code != "":
		respondError(r, code, msg)
	case st.Holder == s.cfg.ID:
		// The job's loop answers later, from its own goroutine, after this handler has
		// returned: reply on the reply subject, never through r, whose state micro reads
		// when the handler returns.
		reply := r.Reply()
		s.removeLocally(ctx, name, req.Instance, func(out *messages.MemberRemoval, e *replyError) {
			msg := nats.NewMsg(reply)
			if e != nil {
				msg = errorReply(reply, e.code, e.msg)
			} else {
				msg.Header.Set("Content-Type", "application/json")
				msg.Data, _ = json.Marshal(out)
			}
			s.publishReply(msg)
		})
	case st.Holder == "":
		respondError(r, codeUnavailable, fmt.Sprintf("no coordinator holds the lease of job %s right now; nothing was removed, try again", name))
	default:
		m, err := s.nc.Request(s.cfg.Subjects.CoordinatorMembersRemove(st.Holder, name), r.Data(), forwardRemovalWait)
		if err != nil {
			respondError(r, codeUnavailable, fmt.Sprintf("the lease holder %s of job %s did not answer the removal: %v; check cairn.status.%s to see whether it happened", st.Holder, name, err, name))
			return
		}
		if c := m.Header.Get(micro.ErrorCodeHeader); c != "" {
			respondError(r, c, m.Header.Get(micro.ErrorHeader))
			return
		}
		if err := r.Respond(m.Data, micro.WithHeaders(micro.Headers{"Content-Type": []string{"application/json"}})); err != nil {
			s.log.Warn().Err(err).Msg("member removal reply not sent")
		}
	}
}

// onDirectRemove answers a member removal forwarded to this coordinator by a standby.
func (s *Service) onDirectRemove(ctx context.Context, m *nats.Msg) {
	name := s.cfg.Subjects.Token(m.Subject, 4)
	respond := func(out *messages.MemberRemoval, e *replyError) {
		reply := nats.NewMsg(m.Reply)
		if e != nil {
			reply = errorReply(m.Reply, e.code, e.msg)
		} else {
			reply.Data, _ = json.Marshal(out)
		}
		if err := m.RespondMsg(reply); err != nil {
			s.log.Debug().Err(err).Msg("direct member removal reply not sent")
		}
	}
	if err := messages.ValidateName("job", name); err != nil {
		respond(nil, &replyError{codeBadRequest, err.Error()})
		return
	}
	req, err := parseRemoveRequest(m.Data)
	if err != nil {
		respond(nil, &replyError{codeBadRequest, err.Error()})
		return
	}
	s.removeLocally(ctx, name, req.Instance, respond)
}

// removeLocally hands a removal to the job's loop, which calls done when it has been
// decided; done is called here when the loop cannot take it. A parked job is woken until
// the removal is decided.
func (s *Service) removeLocally(ctx context.Context, name, instance string, done func(*messages.MemberRemoval, *replyError)) {
	j, release := s.wakeForRemoval(ctx, name, done)
	if release == nil {
		return
	}
	if j == nil {
		done(nil, &replyError{codeNotFound, fmt.Sprintf("unknown job %q: it has no config and no registered instance", name)})
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	decided := func(out *messages.MemberRemoval, e *replyError) {
		release()
		done(out, e)
	}
	if !send(qctx, j.removes, removeRequest{instance: instance, done: decided}) {
		decided(nil, &replyError{codeUnavailable, "coordinator busy or stopping; nothing was removed, try again"})
	}
}
