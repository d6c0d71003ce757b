package coordinator

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
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

// replyMsg is a core NATS reply on subject: v as JSON, or e as errorReply.
func replyMsg(subject string, v any, e *replyError) *nats.Msg {
	if e != nil {
		return errorReply(subject, e.code, e.msg)
	}
	out := nats.NewMsg(subject)
	out.Header.Set("Content-Type", "application/json")
	out.Data, _ = json.Marshal(v)
	return out
}

// errorReply is every error reply of the coordinator: micro's error headers (the message
// on one line, as a header value must be) and the JSON body {"error": msg}.
func errorReply(subject, code, msg string) *nats.Msg {
	reply := nats.NewMsg(subject)
	reply.Header.Set(micro.ErrorCodeHeader, code)
	reply.Header.Set(micro.ErrorHeader, strings.NewReplacer("\r", " ", "\n", " ").Replace(msg))
	reply.Data, _ = json.Marshal(messages.ErrorBody{Error: msg}) // a struct of one string always encodes
	return reply
}

// respondError answers a micro request with errorReply's headers and body, through micro
// so that its stats count the error.
func respondError(r micro.Request, e *replyError) {
	m := errorReply("", e.code, e.msg)
	_ = r.Error(e.code, m.Header.Get(micro.ErrorHeader), m.Data)
}

// publishReply sends a reply composed off the handler's goroutine.
func (s *Service) publishReply(m *nats.Msg) {
	if err := s.nc.PublishMsg(m); err != nil {
		if msg := "reply not sent"; s.noise.Allow(msg) {
			s.log.Warn().Err(err).Str("subject", m.Subject).Msg(msg)
		}
	}
}
