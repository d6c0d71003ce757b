package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// answerFunc answers a request with a JSON reply value, or with e when it is not nil. It
// is called once, possibly from a job's loop after the handler has returned.
type answerFunc func(v any, e *replyError)

// holderRequest describes a request that only the lease holder of a job answers (member
// removal, manual checkpoints, savepoint deletion).
type holderRequest struct {
	// job is the job's name.
	job string
	// what names the request in error messages ("removal", "trigger").
	what string
	// unchanged says what the caller can rely on when no holder answered ("nothing was
	// removed").
	unchanged string
	// direct is the holder's direct subject for the request.
	direct func(holder string) string
	// wait bounds how long a standby waits for the holder's answer.
	wait time.Duration
	// local hands the request to this coordinator's loop of the job.
	local func(done answerFunc)
}

// parseHolderCall checks the job name and the body of a request that only the lease
// holder answers, alike on its public endpoint and on the direct subject a standby
// forwards it to: a bad one is answered 400 wherever it arrives.
func parseHolderCall[T any](job string, body []byte, parse func([]byte) (T, error)) (T, *replyError) {
	var zero T
	if err := messages.ValidateName("job", job); err != nil {
		return zero, &replyError{codeBadRequest, err.Error()}
	}
	req, err := parse(body)
	if err != nil {
		return zero, &replyError{codeBadRequest, err.Error()}
	}
	return req, nil
}

// atHolder answers r at the job's lease holder. Any replica may receive r (micro's queue
// group): the holder hands it to its loop; a standby forwards the body to the holder's
// direct subject and relays the answer. The answer goes to r's reply subject from a
// goroutine of its own, never through r, whose state micro reads when the handler returns,
// so that a request waiting for a checkpoint delays no other request.
func (s *Service) atHolder(ctx context.Context, r micro.Request, hr holderRequest) {
	reply, data := r.Reply(), r.Data()
	s.wg.Go(func() {
		answer := func(v any, e *replyError) { s.publishReply(replyMsg(reply, v, e)) }
		st, code, msg := s.localStatus(ctx, hr.job)
		if code == "" && st.Idle && st.Holder == "" {
			// A parked job: its preferred replica wakes it for the request.
			st.Holder = st.Preferred
		}
		switch {
		case code != "":
			answer(nil, &replyError{code, msg})
		case st.Holder == s.cfg.ID:
			hr.local(answer)
		case st.Holder == "":
			answer(nil, &replyError{codeUnavailable, fmt.Sprintf("no coordinator holds the lease of job %s right now; %s, try again", hr.job, hr.unchanged)})
		default:
			fctx, cancel := context.WithTimeout(ctx, hr.wait)
			m, err := s.nc.RequestWithContext(fctx, hr.direct(st.Holder), data)
			cancel()
			if err != nil {
				answer(nil, &replyError{codeUnavailable, fmt.Sprintf("the lease holder %s of job %s did not answer the %s within %s: %v; check cairn.status.%s to see whether it happened",
					st.Holder, hr.job, hr.what, hr.wait, err, hr.job)})
				return
			}
			out := nats.NewMsg(reply)
			for k, v := range m.Header {
				out.Header[k] = v
			}
			out.Data = m.Data
			if out.Header.Get(micro.ErrorCodeHeader) == "" {
				out.Header.Set("Content-Type", "application/json")
			}
			s.publishReply(out)
		}
	})
}

// onDirect answers a request forwarded to this coordinator by a standby: local runs on a
// goroutine of its own and answers once.
func (s *Service) onDirect(m *nats.Msg, local func(done answerFunc)) {
	s.wg.Go(func() {
		local(func(v any, e *replyError) {
			if err := m.RespondMsg(replyMsg(m.Reply, v, e)); err != nil {
				s.log.Debug().Err(err).Str("subject", m.Subject).Msg("direct reply not sent")
			}
		})
	})
}

// replyMsg is a core NATS reply: v as JSON, or e with micro's error headers.
func replyMsg(subject string, v any, e *replyError) *nats.Msg {
	if e != nil {
		return errorReply(subject, e.code, e.msg)
	}
	out := nats.NewMsg(subject)
	out.Header.Set("Content-Type", "application/json")
	out.Data, _ = json.Marshal(v)
	return out
}
