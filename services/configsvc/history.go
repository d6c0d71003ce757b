package configsvc

import (
	"context"
	"fmt"
	"strings"
	"time"

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
// reads the subject in one pass of an ephemeral consumer (eachEvent), however many
// messages it holds. The job's head ends the list when it is newer than the newest event
// listed: garbage published on the subject pushed that event out. Truncated is set when
// the list does not start at version 1: older versions are left out, or no longer in the
// stream.
func (s *Service) history(ctx context.Context, job string) (messages.ConfigHistory, error) {
	h := messages.ConfigHistory{Job: job, Versions: []messages.ConfigView{}}
	if err := messages.ValidateName("job", job); err != nil {
		return h, err
	}
	var newest uint64
	add := func(ev *messages.ConfigEvent) {
		h.Versions = append(h.Versions, messages.NewConfigView(job, ev.Version, ev.Config, ev.Time))
		newest = max(newest, ev.Version)
		if len(h.Versions) > messages.MaxHistory {
			h.Versions = h.Versions[1:]
		}
	}
	err := s.eachEvent(ctx, s.cfg.Subjects.ConfigEvents(job), func(seq uint64, data []byte) {
		ev, err := configlog.Decode(data, job)
		if err != nil {
			s.skipped.Log(s.log, job, []configlog.Skipped{{Seq: seq, Err: err}})
			return
		}
		add(ev)
	})
	if err != nil {
		return h, err
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

// historyIdle is how long the server keeps a history consumer the service stopped reading.
const historyIdle = 10 * time.Second

// eachEvent calls f with the stream sequence and data of every message on subject, in
// stream order, up to the last one there when it starts. It reads them with an ephemeral
// consumer (no acks, in memory, removed by the server historyIdle after the last read),
// buffering at most four maximal messages.
func (s *Service) eachEvent(ctx context.Context, subject string, f func(seq uint64, data []byte)) error {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	cons, err := s.consumers.CreateConsumer(cctx, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: historyIdle,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("%w: read the history of %s: %w", ErrUnavailable, subject, err)
	}
	if cons.CachedInfo().NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(int(4 * s.nc.MaxPayload())))
	if err != nil {
		return fmt.Errorf("%w: read the history of %s: %w", ErrUnavailable, subject, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("%w: read the history of %s: %w", ErrUnavailable, subject, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("%w: read the history of %s: %w", ErrUnavailable, subject, err)
		}
		f(md.Sequence.Stream, m.Data())
		if md.NumPending == 0 {
			return nil
		}
	}
}
