package configsvc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrUnavailable is returned (wrapped) when the config stream cannot be read or written,
// or holds an event that cannot be read; it maps to code 503.
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

// current reads the config in force for job: its last event, or the defaults at version
// 0 when it has none.
func (s *Service) current(ctx context.Context, job string) (current, error) {
	subject := s.cfg.Subjects.ConfigEvents(job)
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	msg, err := s.last.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return current{config: messages.DefaultConfig()}, nil
	}
	if err != nil {
		return current{}, fmt.Errorf("%w: read the last event of %s: %w", ErrUnavailable, subject, err)
	}
	var ev messages.ConfigEvent
	if err := messages.Unmarshal(msg.Data, &ev); err != nil {
		return current{}, fmt.Errorf("%w: the config event at stream sequence %d of %s cannot be read: %w", ErrUnavailable, msg.Sequence, subject, err)
	}
	if ev.Job != job {
		return current{}, fmt.Errorf("%w: the config event at stream sequence %d of %s belongs to job %q", ErrUnavailable, msg.Sequence, subject, ev.Job)
	}
	return current{
		version: ev.Version,
		config:  ev.Config,
		updated: ev.Time,
		seq:     msg.Sequence,
		msgID:   msg.Header.Get(jetstream.MsgIDHeader),
	}, nil
}
