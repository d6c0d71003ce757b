package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
	"github.com/cairn-stream/cairn/services/coordinator/internal/store"
)

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

// onDelete answers cairn.checkpoint.delete.<job> at the job's lease holder (see atHolder).
func (s *Service) onDelete(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 2)
	req, e := parseHolderCall(name, r.Data(), parseSavepointRequest)
	if e != nil {
		respondError(r, e.code, e.msg)
		return
	}
	s.atHolder(ctx, r, holderRequest{
		job: name, what: "deletion", unchanged: "nothing was deleted", wait: forwardRemovalWait,
		direct: func(holder string) string { return s.cfg.Subjects.CoordinatorCheckpoint(holder, "delete", name) },
		local:  func(done answerFunc) { s.deleteLocally(ctx, name, req.Savepoint, done) },
	})
}

// onDirectDelete answers a savepoint deletion forwarded to this coordinator by a standby.
func (s *Service) onDirectDelete(ctx context.Context, m *nats.Msg) {
	name := s.cfg.Subjects.Token(m.Subject, 4)
	s.onDirect(m, func(done answerFunc) {
		req, e := parseHolderCall(name, m.Data, parseSavepointRequest)
		if e != nil {
			done(nil, e)
			return
		}
		s.deleteLocally(ctx, name, req.Savepoint, done)
	})
}

// deleteLocally hands a savepoint deletion to the job's loop; done is called here when the
// loop cannot take it.
func (s *Service) deleteLocally(ctx context.Context, name, savepoint string, done answerFunc) {
	j, release := s.wakeFor(ctx, name, "nothing was deleted", func(e *replyError) { done(nil, e) })
	if j == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	decided := func(out *messages.SavepointDeleted, e *loop.Error) {
		release()
		done(out, fromLoop(e))
	}
	if !j.DeleteSavepoint(qctx, savepoint, decided) {
		decided(nil, &loop.Error{Kind: loop.Unavailable, Msg: "coordinator busy or stopping; nothing was deleted, try again"})
	}
}

// onList answers cairn.checkpoint.list.<job> from the manifest bucket, which every
// replica reads alike: no forwarding to the lease holder.
func (s *Service) onList(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 2)
	if err := messages.ValidateName("job", name); err != nil {
		respondError(r, codeBadRequest, err.Error())
		return
	}
	if body := bytes.TrimSpace(r.Data()); len(body) > 0 && !bytes.Equal(body, []byte("{}")) {
		respondError(r, codeBadRequest, fmt.Sprintf("the list request takes no body (or {}); got %q", body))
		return
	}
	if s.lookup(name) == nil {
		respondError(r, codeNotFound, fmt.Sprintf("unknown job %q: it has no config and no registered instance", name))
		return
	}
	reply := r.Reply()
	s.wg.Go(func() {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		list, err := store.ListCheckpoints(lctx, s.nc, s.res.Manifests, name)
		if err != nil {
			s.publishReply(replyMsg(reply, nil, &replyError{codeUnavailable, fmt.Sprintf("cannot list the checkpoints of job %s: %v", name, err)}))
			return
		}
		s.publishReply(replyMsg(reply, list, nil))
	})
}
