package coordinator

import (
	"encoding/json"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// badRequest is the 400 reply of err.
func badRequest(err error) *reply.Coded { return reply.New(reply.BadRequest, err.Error()) }

// loopCodes are the reply codes of the loop's error kinds.
var loopCodes = map[loop.ErrorKind]string{loop.Unavailable: reply.Unavailable, loop.Conflict: reply.Conflict, loop.NotFound: reply.NotFound}

// fromLoop is the error reply of a request the loop refused; nil for nil.
func fromLoop(e *loop.Error) *reply.Coded {
	if e == nil {
		return nil
	}
	return reply.New(loopCodes[e.Kind], e.Msg)
}

// answerFunc answers a request with a JSON reply value, or with e when it is not nil. It
// is called once, possibly from a job's loop after the handler has returned.
type answerFunc func(v any, e *reply.Coded)

// replyMsg is a core NATS reply on subject: v as JSON, or e (reply.Msg).
func replyMsg(subject string, v any, e *reply.Coded) *nats.Msg {
	if e != nil {
		return reply.Msg(subject, e.Code, e.Description)
	}
	out := nats.NewMsg(subject)
	out.Header.Set("Content-Type", "application/json")
	out.Data, _ = json.Marshal(v)
	return out
}

// respondError answers a micro request with e (reply.Error), through micro so that its
// stats count the error.
func respondError(r micro.Request, e *reply.Coded) {
	_ = reply.Error(r, e.Code, e.Description)
}

// publishReply sends a reply composed off the handler's goroutine.
func (s *Service) publishReply(m *nats.Msg) {
	if err := s.nc.PublishMsg(m); err != nil {
		if msg := "reply not sent"; s.noise.Allow(msg) {
			s.log.Warn().Err(err).Str("subject", m.Subject).Msg(msg)
		}
	}
}
