package configsvc

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// code maps an error of set or get to its reply code.
func code(err error) string {
	switch {
	case errors.Is(err, messages.ErrBadRequest), errors.Is(err, messages.ErrInvalidName):
		return reply.BadRequest
	case errors.Is(err, ErrVersionConflict):
		return reply.Conflict
	case errors.Is(err, ErrUnavailable):
		return reply.Unavailable
	}
	return reply.Internal
}

// fail answers req with err: its code, the message as the error header and as the JSON
// body {"error": ...}. Refusals of bad requests are logged at debug, failures to serve at
// warn.
func fail(req micro.Request, log zerolog.Logger, op string, err error) {
	c := code(err)
	lvl := zerolog.DebugLevel
	if c == reply.Unavailable || c == reply.Internal {
		lvl = zerolog.WarnLevel
	}
	log.WithLevel(lvl).Str("op", op).Str("code", c).Err(err).Msg("request refused")
	if rerr := reply.Error(req, c, err.Error()); rerr != nil {
		log.Debug().Err(rerr).Msg("send error reply")
	}
}

// respond answers req with body as JSON.
func respond(req micro.Request, log zerolog.Logger, body any) {
	if err := req.RespondJSON(body); err != nil {
		log.Debug().Err(err).Msg("send reply")
	}
}

// header returns the first value of the header key, matching the name without regard to
// case as HTTP does; nats.Header.Get is case-sensitive.
func header(h micro.Headers, key string) string {
	if v := h.Get(key); v != "" {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}
