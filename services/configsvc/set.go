package configsvc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrVersionConflict is returned (wrapped) when a set request's expected_version is not
// the current version; it maps to code 409.
var ErrVersionConflict = errors.New("version conflict")

const (
	// maxAttempts is how often a set request re-reads and retries after another writer
	// stored a version first.
	maxAttempts = 10
	// publishTries is how often one event is published, with the same message id, when
	// no acknowledgement comes back.
	publishTries = 3
)

// errLostRace means another writer stored an event on the job's subject after we read it.
var errLostRace = errors.New("another change was stored first")

func (s *Service) handleSet(ctx context.Context, req micro.Request) {
	s.handlers.RLock()
	defer s.handlers.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	job := strings.TrimPrefix(req.Subject(), s.cfg.Subjects.ConfigSet(""))
	log := s.log.With().Str("job", job).Logger()
	view, err := s.set(ctx, log, job, header(req.Headers(), "Content-Type"), req.Data())
	if err != nil {
		fail(req, log, "set", err)
		return
	}
	respond(req, log, view)
}

// set applies a set request for job and returns the config now in force.
func (s *Service) set(ctx context.Context, log zerolog.Logger, job, contentType string, body []byte) (messages.ConfigView, error) {
	if err := messages.ValidateName("job", job); err != nil {
		return messages.ConfigView{}, err
	}
	patch, err := parsePatch(contentType, body)
	if err != nil {
		return messages.ConfigView{}, err
	}
	for attempt := 1; ; attempt++ {
		cur, err := s.current(ctx, job)
		if err != nil {
			return messages.ConfigView{}, err
		}
		if ev := patch.ExpectedVersion; ev != nil && *ev != cur.version {
			return messages.ConfigView{}, fmt.Errorf("%w: expected_version %d does not match the current version %d of job %q; get the config and retry with expected_version %d",
				ErrVersionConflict, *ev, cur.version, job, cur.version)
		}
		merged, err := patch.Apply(cur.config)
		if err != nil {
			return messages.ConfigView{}, err
		}
		ev := messages.ConfigEvent{
			Schema:  messages.SchemaVersion,
			Job:     job,
			Version: cur.version + 1,
			Config:  merged,
			Time:    s.now().UTC(),
		}
		err = s.publish(ctx, &ev, cur.seq)
		if err == nil {
			if err := s.keepHead(ctx, &ev, cur); err != nil {
				// The version is stored and in force; the next request writes the head.
				log.Error().Err(err).Uint64("version", ev.Version).
					Msg("config head not written: until a request writes it, garbage on the events subject could hide this version")
			}
			zlog.Config(log.Info().Uint64("version", ev.Version), merged).Msg("config changed")
			return messages.NewConfigView(job, ev.Version, merged, ev.Time), nil
		}
		if !errors.Is(err, errLostRace) {
			return messages.ConfigView{}, err
		}
		if attempt == maxAttempts {
			return messages.ConfigView{}, fmt.Errorf("%w: job %q: other changes were stored first %d times in a row; retry the request", ErrUnavailable, job, maxAttempts)
		}
		log.Debug().Uint64("version", ev.Version).Int("attempt", attempt).Msg("another change was stored first; re-reading")
		if err := backoff(ctx, attempt); err != nil {
			return messages.ConfigView{}, fmt.Errorf("%w: job %q: %w", ErrUnavailable, job, err)
		}
	}
}

// parsePatch parses the body as msgpack when contentType says so, else as JSON.
func parsePatch(contentType string, body []byte) (messages.ConfigPatch, error) {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt == messages.ContentTypeMsgpack {
		return messages.ParseConfigPatchMsgpack(body)
	}
	return messages.ParseConfigPatch(body)
}

// publish stores ev on the job's subject provided the subject's last event is still the
// one at lastSeq. It returns errLostRace when another event came first. When an
// acknowledgement does not come, it publishes again with the same message id; as the
// server checks the expected sequence before duplicates, a retry whose first try was
// stored reports a lost race, so the job's last event is then checked for our id.
func (s *Service) publish(ctx context.Context, ev *messages.ConfigEvent, lastSeq uint64) error {
	data, err := messages.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode config event: %w", err)
	}
	subject := s.cfg.Subjects.ConfigEvents(ev.Job)
	id := fmt.Sprintf("%s.%d.%s", ev.Job, ev.Version, nuid.Next())
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(id), jetstream.WithExpectLastSequencePerSubject(lastSeq)}
	if s.stream != "" {
		opts = append(opts, jetstream.WithExpectStream(s.stream))
	}
	var lastErr error
	for try := range publishTries {
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		msg.Header.Set(messages.HeaderConfigVersion, strconv.FormatUint(ev.Version, 10))
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := s.pub.PublishMsg(pctx, msg, opts...)
		cancel()
		switch {
		case err == nil:
			return nil
		case wrongLastSequence(err):
			if try > 0 && s.stored(ctx, ev.Job, id) {
				return nil
			}
			return errLostRace
		case noAck(err):
			lastErr = err
			continue
		}
		return fmt.Errorf("%w: publish version %d to %s: %w", ErrUnavailable, ev.Version, subject, err)
	}
	if s.stored(ctx, ev.Job, id) {
		return nil
	}
	return fmt.Errorf("%w: publish version %d to %s: no acknowledgement after %d tries; the change may still be stored, get the config to see: %w",
		ErrUnavailable, ev.Version, subject, publishTries, lastErr)
}

// stored reports whether job's last event is the one published with message id.
func (s *Service) stored(ctx context.Context, job, id string) bool {
	cur, err := s.current(ctx, job)
	return err == nil && cur.msgID == id
}

// wrongLastSequence reports whether err is JetStream's "wrong last sequence" answer to an
// expected-sequence publish (10071, or 10164 from replicated streams).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// noAck reports whether err means the publish may or may not have been stored.
func noAck(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// backoff waits a random moment, longer with each attempt, so that replicas racing for
// the same job stop colliding.
func backoff(ctx context.Context, attempt int) error {
	t := time.NewTimer(rand.N(time.Duration(attempt) * 2 * time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
