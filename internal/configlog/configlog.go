// Package configlog reads a job's config in force from its config events in CAIRN_CONFIG,
// skipping messages on the job's subject that are not valid config events (garbage,
// another job's event, values out of range), so that one bad record neither resets a
// job to the defaults nor blocks its next version. configsvc and the coordinator share
// it.
package configlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// Reader reads single messages of the config stream; jetstream.Stream implements it.
type Reader interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// ErrForeignJob is returned (wrapped, with messages.ErrMalformed) by Decode for a valid
// config event of another job than the subject's.
var ErrForeignJob = errors.New("config event of another job")

// Decode decodes data as a config event of job; the error wraps messages.ErrMalformed
// when data is not a valid config event or belongs to another job.
func Decode(data []byte, job string) (*messages.ConfigEvent, error) {
	var ev messages.ConfigEvent
	if err := messages.Unmarshal(data, &ev); err != nil {
		return nil, err
	}
	if ev.Job != job {
		return nil, fmt.Errorf("%w: %w: it names job %q, its subject job %q", messages.ErrMalformed, ErrForeignJob, ev.Job, job)
	}
	return &ev, nil
}

// Skipped is a message on a job's config subject that is not a valid config event.
type Skipped struct {
	// Seq is the message's stream sequence.
	Seq uint64
	// Err says why it was skipped; it wraps messages.ErrMalformed.
	Err error
}

// Latest is what a job's config subject holds.
type Latest struct {
	// Event is the newest valid config event, nil when there is none.
	Event *messages.ConfigEvent
	// Last is the subject's last message, valid or not; nil when the subject is empty.
	// A publish of the next version expects its sequence.
	Last *jetstream.RawStreamMsg
	// Skipped are the messages after Event that are not valid config events, oldest
	// first; Last is the newest of them when Event is not the last message.
	Skipped []Skipped
}

// Read returns the newest valid config event of job on subject. When the last message is
// valid that is one read; otherwise the subject is read from its first message on, one
// direct get per message (as many as the stream keeps per subject), up to the last one.
// Every read gets its own timeout; ctx bounds them all.
func Read(ctx context.Context, r Reader, subject, job string, timeout time.Duration) (Latest, error) {
	var l Latest
	gctx, cancel := context.WithTimeout(ctx, timeout)
	last, err := r.GetLastMsgForSubject(gctx, subject)
	cancel()
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return l, nil
	}
	if err != nil {
		return l, fmt.Errorf("read the last event of %s: %w", subject, err)
	}
	l.Last = last
	ev, err := Decode(last.Data, job)
	if err == nil {
		l.Event = ev
		return l, nil
	}
	for seq := uint64(1); seq < last.Sequence; {
		gctx, cancel := context.WithTimeout(ctx, timeout)
		msg, err := r.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(subject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return Latest{}, fmt.Errorf("read %s at stream sequence %d: %w", subject, seq, err)
		}
		if msg.Sequence >= last.Sequence {
			break
		}
		if ev, derr := Decode(msg.Data, job); derr == nil {
			l.Event, l.Skipped = ev, l.Skipped[:0]
		} else {
			l.Skipped = append(l.Skipped, Skipped{Seq: msg.Sequence, Err: derr})
		}
		seq = msg.Sequence + 1
	}
	l.Skipped = append(l.Skipped, Skipped{Seq: last.Sequence, Err: err})
	return l, nil
}

// maxRemembered bounds the stream sequences a SkipLog remembers; past it, it forgets
// them all and may log a skipped message again.
const maxRemembered = 4096

// SkipLog logs skipped config events at ERROR, once per stream sequence. The zero value
// is ready to use; it is safe for concurrent use.
type SkipLog struct {
	mu   sync.Mutex
	seen map[uint64]struct{}
}

// Log logs each of job's skipped messages that it has not logged before.
func (s *SkipLog) Log(log zerolog.Logger, job string, skipped []Skipped) {
	if len(skipped) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sk := range skipped {
		if _, done := s.seen[sk.Seq]; done {
			continue
		}
		if s.seen == nil || len(s.seen) >= maxRemembered {
			s.seen = map[uint64]struct{}{}
		}
		s.seen[sk.Seq] = struct{}{}
		log.Error().Err(sk.Err).Str("job", job).Uint64("stream_sequence", sk.Seq).
			Msg("config event skipped: not a valid config event; the newest valid one stays in force")
	}
}
