package configsvc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrUnavailable is returned (wrapped) when the config stream cannot be read or written;
// it maps to code 503.
var ErrUnavailable = errors.New("config storage unavailable")

// current is a job's config in force and where it is in the stream.
type current struct {
	version uint64
	config  messages.CheckpointConfig
	// updated is when the version was accepted; zero for the defaults.
	updated time.Time
	// seq is the stream sequence of the last message on the job's events subject; 0 when
	// it has none.
	seq uint64
	// msgID is the Nats-Msg-Id of that message.
	msgID string
	// event is the config event in force; nil for the defaults.
	event *messages.ConfigEvent
	// headVersion is the version the job's head holds (0: none); headSeq is the stream
	// sequence of the head subject's last message (0: empty), which a head write expects.
	headVersion, headSeq uint64
}

// current reads the config in force for job (configlog.Read: the newer of its head and
// its last event): its newest valid event, or the defaults at version 0 when it has none.
// Messages that are not valid events are skipped (and logged once each); seq and msgID
// stay those of the events subject's last message, whatever it holds, since the next
// publish expects that sequence.
func (s *Service) current(ctx context.Context, job string) (current, error) {
	l, err := configlog.Read(ctx, s.last, s.cfg.Subjects, job, opTimeout)
	if err != nil {
		return current{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.skipped.Log(s.log, job, l.Skipped)
	cur := current{config: messages.DefaultConfig(), event: l.Event, headSeq: l.HeadSeq}
	if l.Last != nil {
		cur.seq, cur.msgID = l.Last.Sequence, l.Last.Header.Get(jetstream.MsgIDHeader)
	}
	if l.Event != nil {
		cur.version, cur.config, cur.updated = l.Event.Version, l.Event.Config, l.Event.Time
	}
	if l.Head != nil {
		cur.headVersion = l.Head.Version
	}
	return cur, nil
}

// keepHead makes the job's head hold ev, unless it holds ev's version or a newer one
// already: it publishes a copy of ev on the head subject, expecting the head subject's
// last sequence as cur read it, and when another write came first it reads the head again
// and retries while it is older. Heads therefore only move forward, whichever replica
// writes. When no acknowledgement comes (a server that denies the subject answers none) it
// reads the head once to see whether the write was stored, and does not retry.
func (s *Service) keepHead(ctx context.Context, ev *messages.ConfigEvent, cur current) error {
	data, err := messages.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode config head: %w", err)
	}
	subject := s.cfg.Subjects.ConfigHead(ev.Job)
	opts := func(seq uint64) []jetstream.PublishOpt {
		o := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(seq)}
		if s.stream != "" {
			o = append(o, jetstream.WithExpectStream(s.stream))
		}
		return o
	}
	for attempt := 1; cur.headVersion < ev.Version; attempt++ {
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		msg.Header.Set(messages.HeaderConfigVersion, strconv.FormatUint(ev.Version, 10))
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, perr := s.pub.PublishMsg(pctx, msg, opts(cur.headSeq)...)
		cancel()
		switch {
		case perr == nil:
			return nil
		case noAck(perr):
			if cur, err = s.current(ctx, ev.Job); err != nil {
				return err
			}
			if cur.headVersion >= ev.Version {
				return nil
			}
			return fmt.Errorf("%w: write version %d to %s: no acknowledgement: %w", ErrUnavailable, ev.Version, subject, perr)
		case !wrongLastSequence(perr):
			return fmt.Errorf("%w: write version %d to %s: %w", ErrUnavailable, ev.Version, subject, perr)
		case attempt == maxAttempts:
			return fmt.Errorf("%w: write version %d to %s: other writes came first %d times in a row: %w", ErrUnavailable, ev.Version, subject, maxAttempts, perr)
		}
		if cur, err = s.current(ctx, ev.Job); err != nil {
			return err
		}
	}
	return nil
}

// repairHead writes the head of a job whose head is behind its config in force (a
// deployment from before heads, or a configsvc that stopped between its two publishes),
// so that garbage published on the events subject afterwards cannot hide that version.
// A failure is logged: the next read tries again.
func (s *Service) repairHead(ctx context.Context, log zerolog.Logger, cur current) {
	if cur.event == nil || cur.headVersion >= cur.version {
		return
	}
	if err := s.keepHead(ctx, cur.event, cur); err != nil {
		log.Warn().Err(err).Uint64("version", cur.version).Msg("cannot write the config head; the next request tries again")
		return
	}
	log.Info().Uint64("version", cur.version).Uint64("head_version", cur.headVersion).Msg("config head written for the version in force")
}
