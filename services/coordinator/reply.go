package coordinator

import (
	"encoding/json"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// Error codes of the coordinator's replies (micro's Nats-Service-Error-Code).
const (
	codeBadRequest  = "400"
	codeNotFound    = "404"
	codeConflict    = "409"
	codeUnavailable = "503"
)

// replyError is an error reply: a code and a message saying what was wrong.
type replyError struct {
	code, msg string
}

// badRequest is the 400 reply of err.
func badRequest(err error) *replyError { return &replyError{codeBadRequest, err.Error()} }

// loopCodes are the reply codes of the loop's error kinds.
var loopCodes = map[loop.ErrorKind]string{loop.Unavailable: codeUnavailable, loop.Conflict: codeConflict, loop.NotFound: codeNotFound}

// fromLoop is the error reply of a request the loop refused; nil for nil.
func fromLoop(e *loop.Error) *replyError {
	if e == nil {
		return nil
	}
	return &replyError{loopCodes[e.Kind], e.Msg}
}

// answerFunc answers a request with a JSON reply value, or with e when it is not nil. It
// is called once, possibly from a job's loop after the handler has returned.
type answerFunc func(v any, e *replyError)

// replyMsg is a core NATS reply on subject: v as JSON, or e (reply.Msg).
func replyMsg(subject string, v any, e *replyError) *nats.Msg {
	if e != nil {
		return reply.Msg(subject, e.code, e.msg)
	}
	out := nats.NewMsg(subject)
	out.Header.Set("Content-Type", "application/json")
	out.Data, _ = json.Marshal(v)
	return out
}

// respondError answers a micro request with e (reply.Error), through micro so that its
// stats count the error.
func respondError(r micro.Request, e *replyError) {
	_ = reply.Error(r, e.code, e.msg)
}

// publishReply sends a reply composed off the handler's goroutine.
func (s *Service) publishReply(m *nats.Msg) {
	if err := s.nc.PublishMsg(m); err != nil {
		if msg := "reply not sent"; s.noise.Allow(msg) {
			s.log.Warn().Err(err).Str("subject", m.Subject).Msg(msg)
		}
	}
}
