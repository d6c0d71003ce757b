package configsvc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrUnavailable is returned (wrapped) when the config stream cannot be read or written;
// it maps to code 503.
var ErrUnavailable = errors.New("config storage unavailable")

// current is a job's config in force and where it is in the stream.
type current struct {
	version uint64
	config  messages.Config
	// updated is when the version was accepted; zero for the defaults.
	updated time.Time
	// seq is the stream sequence of the job's last event; 0 when it has none.
	seq uint64
	// msgID is the Nats-Msg-Id of the job's last event.
	msgID string
}

// current reads the config in force for job: its newest valid event, or the defaults at
// version 0 when it has none. Messages on the job's subject that are not valid events are
// skipped (and logged once each); seq and msgID stay those of the subject's last
// message, whatever it holds, since the next publish expects that sequence.
func (s *Service) current(ctx context.Context, job string) (current, error) {
	subject := s.cfg.Subjects.ConfigEvents(job)
	l, err := configlog.Read(ctx, s.last, subject, job, opTimeout)
	if err != nil {
		return current{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.logSkipped(job, l.Skipped)
	cur := current{config: messages.DefaultConfig()}
	if l.Last != nil {
		cur.seq, cur.msgID = l.Last.Sequence, l.Last.Header.Get(jetstream.MsgIDHeader)
	}
	if l.Event != nil {
		cur.version, cur.config, cur.updated = l.Event.Version, l.Event.Config, l.Event.Time
	}
	return cur, nil
}

// maxSkippedLogged bounds the stream sequences logSkipped remembers.
const maxSkippedLogged = 4096

// logSkipped logs, at ERROR and once per stream sequence, the messages on job's config
// subject that are not valid config events.
func (s *Service) logSkipped(job string, skipped []configlog.Skipped) {
	if len(skipped) == 0 {
		return
	}
	s.skippedMu.Lock()
	defer s.skippedMu.Unlock()
	for _, sk := range skipped {
		if _, done := s.skipped[sk.Seq]; done {
			continue
		}
		if len(s.skipped) >= maxSkippedLogged {
			clear(s.skipped)
		}
		s.skipped[sk.Seq] = struct{}{}
		s.log.Error().Err(sk.Err).Str("job", job).Uint64("stream_sequence", sk.Seq).
			Msg("config event skipped: not a valid config event; the newest valid one stays in force")
	}
}
