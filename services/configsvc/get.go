package configsvc

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/messages"
)

func (s *Service) handleGet(ctx context.Context, req micro.Request) {
	s.handlers.RLock()
	defer s.handlers.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	job := strings.TrimPrefix(req.Subject(), s.cfg.Subjects.ConfigGet(""))
	log := s.log.With().Str("job", job).Logger()
	view, err := s.get(ctx, log, job)
	if err != nil {
		fail(req, log, "get", err)
		return
	}
	respond(req, log, view)
}

// get returns the config in force for job: version 0 and the defaults when it has none.
// It writes the job's head when the head is behind (repairHead).
func (s *Service) get(ctx context.Context, log zerolog.Logger, job string) (messages.ConfigView, error) {
	if err := messages.ValidateName("job", job); err != nil {
		return messages.ConfigView{}, err
	}
	cur, err := s.current(ctx, job)
	if err != nil {
		return messages.ConfigView{}, err
	}
	s.repairHead(ctx, log, cur)
	return messages.NewConfigView(job, cur.version, cur.config, cur.updated), nil
}
