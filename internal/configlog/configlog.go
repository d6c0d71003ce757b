package configlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
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

// Skipped is a message on a job's config subjects that is not a valid config event.
type Skipped struct {
	// Seq is the message's stream sequence.
	Seq uint64
	// Err says why it was skipped; it wraps messages.ErrMalformed.
	Err error
}

// Latest is what a job's config subjects hold.
type Latest struct {
	// Event is the config in force: the newer of Head and the events subject's last
	// message when that is a valid event; nil when the job has none.
	Event *messages.ConfigEvent
	// Last is the events subject's last message, valid or not; nil when the subject is
	// empty. A publish of the next version expects its sequence.
	Last *jetstream.RawStreamMsg
	// Head is the newest valid head, nil when there is none.
	Head *messages.ConfigEvent
	// HeadSeq is the stream sequence of the head subject's last message, valid or not; 0
	// when the subject is empty. A write of the head expects it.
	HeadSeq uint64
	// Skipped are the messages read that are not valid config events, oldest first.
	Skipped []Skipped
}

// HeadBehind reports whether the head holds an older version than the config in force
// (or none): the events subject's last message is newer (configsvc stopped between its
// two publishes), or the job has no head yet.
func (l Latest) HeadBehind() bool {
	return l.Event != nil && (l.Head == nil || l.Head.Version < l.Event.Version)
}

// Read returns the config in force for job. It reads the last message of the job's
// events subject and of its head subject: two reads. Only when the head subject holds no
// valid last message does it read back through a subject, one direct get per message (as
// many as the stream keeps per subject): the head subject when its last message is
// invalid, then the events subject when there is still no valid head and the events
// subject's last message is invalid too. Every read gets its own timeout; ctx bounds
// them all.
func Read(ctx context.Context, r Reader, s cairnjs.Subjects, job string, timeout time.Duration) (Latest, error) {
	var l Latest
	events := s.ConfigEvents(job)
	last, err := lastMsg(ctx, r, events, timeout)
	if err != nil {
		return Latest{}, err
	}
	var fromLast *messages.ConfigEvent
	if last != nil {
		l.Last = last
		if fromLast, err = Decode(last.Data, job); err != nil {
			l.Skipped = append(l.Skipped, Skipped{Seq: last.Sequence, Err: err})
		}
	}
	head, headSeq, skipped, err := ReadHead(ctx, r, s, job, timeout)
	if err != nil {
		return Latest{}, err
	}
	l.Head, l.HeadSeq, l.Skipped = head, headSeq, append(l.Skipped, skipped...)
	if head == nil && fromLast == nil && last != nil {
		// A deployment from before heads: configsvc writes the head after this read.
		ev, skipped, err := newestBefore(ctx, r, events, job, last.Sequence, timeout)
		if err != nil {
			return Latest{}, err
		}
		fromLast, l.Skipped = ev, append(l.Skipped, skipped...)
	}
	l.Event = newer(head, fromLast)
	slices.SortFunc(l.Skipped, func(a, b Skipped) int { return cmp.Compare(a.Seq, b.Seq) })
	return l, nil
}

// ReadHead returns the newest valid head of job (nil when there is none), the stream
// sequence of the head subject's last message (0 when it is empty) and the invalid
// messages read. It reads the head subject's last message and, only when that is not a
// valid config event of job, reads back through the subject for the newest one that is.
func ReadHead(ctx context.Context, r Reader, s cairnjs.Subjects, job string, timeout time.Duration) (*messages.ConfigEvent, uint64, []Skipped, error) {
	subject := s.ConfigHead(job)
	last, err := lastMsg(ctx, r, subject, timeout)
	if err != nil || last == nil {
		return nil, 0, nil, err
	}
	head, err := Decode(last.Data, job)
	if err == nil {
		return head, last.Sequence, nil, nil
	}
	skipped := []Skipped{{Seq: last.Sequence, Err: err}}
	head, more, err := newestBefore(ctx, r, subject, job, last.Sequence, timeout)
	if err != nil {
		return nil, 0, nil, err
	}
	return head, last.Sequence, append(more, skipped...), nil
}

// lastMsg reads subject's last message; nil when the subject is empty.
func lastMsg(ctx context.Context, r Reader, subject string, timeout time.Duration) (*jetstream.RawStreamMsg, error) {
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := r.GetLastMsgForSubject(gctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s: %w", subject, err)
	}
	return m, nil
}

// newestBefore reads subject from its first message up to stream sequence before
// (excluded), one direct get per message, and returns the newest valid config event of
// job among them (nil when there is none) and the invalid messages after it.
func newestBefore(ctx context.Context, r Reader, subject, job string, before uint64, timeout time.Duration) (*messages.ConfigEvent, []Skipped, error) {
	var newest *messages.ConfigEvent
	var skipped []Skipped
	for seq := uint64(1); seq < before; {
		gctx, cancel := context.WithTimeout(ctx, timeout)
		msg, err := r.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(subject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s at stream sequence %d: %w", subject, seq, err)
		}
		if msg.Sequence >= before {
			break
		}
		if ev, derr := Decode(msg.Data, job); derr == nil {
			newest, skipped = ev, skipped[:0]
		} else {
			skipped = append(skipped, Skipped{Seq: msg.Sequence, Err: derr})
		}
		seq = msg.Sequence + 1
	}
	return newest, skipped, nil
}

// newer returns the one of a and b with the higher version, a on a tie; nil when both are.
func newer(a, b *messages.ConfigEvent) *messages.ConfigEvent {
	if a == nil || (b != nil && b.Version > a.Version) {
		return b
	}
	return a
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
