package configsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func (s *Service) handleHistory(ctx context.Context, req micro.Request) {
	s.handlers.RLock()
	defer s.handlers.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	job := strings.TrimPrefix(req.Subject(), s.cfg.Subjects.ConfigHistory(""))
	log := s.log.With().Str("job", job).Logger()
	h, err := s.history(ctx, job)
	if err != nil {
		fail(req, log, "history", err)
		return
	}
	respond(req, log, h)
}

// history reads every config event of job from the stream, oldest first, keeping the
// newest messages.MaxHistory and skipping messages that are not valid config events. It
// walks the subject with direct gets ("the next message on this subject at or after
// sequence n"), so it needs no consumer. The job's head ends the list when it is newer
// than the newest event listed: garbage published on the subject pushed that event out.
// Truncated is set when the list does not start at version 1: older versions are left
// out, or no longer in the stream.
func (s *Service) history(ctx context.Context, job string) (messages.ConfigHistory, error) {
	h := messages.ConfigHistory{Job: job, Versions: []messages.ConfigView{}}
	if err := messages.ValidateName("job", job); err != nil {
		return h, err
	}
	subject := s.cfg.Subjects.ConfigEvents(job)
	var newest uint64
	add := func(ev *messages.ConfigEvent) {
		h.Versions = append(h.Versions, messages.NewConfigView(job, ev.Version, ev.Config, ev.Time))
		newest = max(newest, ev.Version)
		if len(h.Versions) > messages.MaxHistory {
			h.Versions = h.Versions[1:]
		}
	}
	for seq := uint64(1); ; {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		msg, err := s.last.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(subject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return h, fmt.Errorf("%w: read the history of %s at sequence %d: %w", ErrUnavailable, subject, seq, err)
		}
		seq = msg.Sequence + 1
		ev, err := configlog.Decode(msg.Data, job)
		if err != nil {
			s.skipped.Log(s.log, job, []configlog.Skipped{{Seq: msg.Sequence, Err: err}})
			continue
		}
		add(ev)
	}
	head, _, skipped, err := configlog.ReadHead(ctx, s.last, s.cfg.Subjects, job, opTimeout)
	if err != nil {
		return h, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.skipped.Log(s.log, job, skipped)
	if head != nil && head.Version > newest {
		add(head)
	}
	h.Truncated = len(h.Versions) > 0 && h.Versions[0].Version > 1
	return h, nil
}
