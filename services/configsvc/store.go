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
	s.skipped.Log(s.log, job, l.Skipped)
	cur := current{config: messages.DefaultConfig()}
	if l.Last != nil {
		cur.seq, cur.msgID = l.Last.Sequence, l.Last.Header.Get(jetstream.MsgIDHeader)
	}
	if l.Event != nil {
		cur.version, cur.config, cur.updated = l.Event.Version, l.Event.Config, l.Event.Time
	}
	return cur, nil
}
