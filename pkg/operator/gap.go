package operator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrInputGap is returned (wrapped) by Run when input the restored state needs (records
// after its position) may have been removed from the input stream by the stream's limits.
// Config.AcceptInputGap goes on without it.
var ErrInputGap = errors.New("input after the restored position may have been removed")

// inputStreams is the part of jetstream.JetStream the input gap check uses.
type inputStreams interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// checkInputGap checks that the input stream still holds every record after the restored
// position that the instance's filters select, as far as JetStream lets it tell (see
// docs/failure-model.md). On a possible gap it fails with ErrInputGap, or, with
// Config.AcceptInputGap, logs at warn level and records an input_gap_accepted member
// event. An empty start needs no check.
func (r *Runtime) checkInputGap(ctx context.Context, rs restored) error {
	if rs.ref == nil {
		return nil
	}
	st, err := r.streams.Stream(ctx, r.cfg.InputStream)
	if err != nil {
		return fmt.Errorf("read the info of input stream %s to check for an input gap: %w", r.cfg.InputStream, err)
	}
	info := st.CachedInfo()
	cause, err := r.gapCause(ctx, st, info, rs.position)
	if err != nil {
		return err
	}
	if cause == "" {
		return nil
	}
	gap := fmt.Sprintf("input stream %s, filters %s: the state restored from checkpoint %d includes sequence %d; the stream's first sequence is %d, its last %d; %s",
		r.cfg.InputStream, strings.Join(r.cfg.InputFilters, ", "), rs.checkpoint, rs.position, info.State.FirstSeq, info.State.LastSeq, cause)
	if !r.cfg.AcceptInputGap {
		return fmt.Errorf("%w: job %s, instance %s: %s; start it with --accept-input-gap (Config.AcceptInputGap) to go on without that input",
			ErrInputGap, r.cfg.Job, r.cfg.Instance, gap)
	}
	r.log.Warn("input gap accepted: going on without the input that may have been removed", "gap", gap)
	return r.memberEvent(ctx, messages.MemberInputGapAccepted, rs.checkpoint, gap)
}

// gapCause names the stream limits that may have removed records after pos that the
// filter selects, or returns "" when none can have. The limits MaxMsgs, MaxBytes and
// MaxAge remove the stream's oldest messages, of any subject: while the first sequence is
// at most pos+1 they removed nothing after pos. Above it, the missing messages may also be
// Cairn's per-subject trimming of other subjects or purges, so each limit is asked whether
// it can have reached past pos.
func (r *Runtime) gapCause(ctx context.Context, st jetstream.Stream, info *jetstream.StreamInfo, pos uint64) (string, error) {
	cfg, state := info.Config, info.State
	if state.LastSeq < pos {
		return "the last sequence is below the position: the stream was deleted and created again", nil
	}
	discardOld := cfg.Discard != jetstream.DiscardNew
	var causes []string
	if cfg.MaxMsgsPerSubject > 0 && (discardOld || !cfg.DiscardNewPerSubject) {
		c, err := r.perSubjectCause(ctx, st, cfg.MaxMsgsPerSubject, pos)
		if err != nil {
			return "", err
		}
		if c != "" {
			causes = append(causes, c)
		}
	}
	if state.FirstSeq > pos+1 {
		if cfg.MaxMsgs > 0 && discardOld && state.LastSeq-pos > uint64(cfg.MaxMsgs) {
			causes = append(causes, fmt.Sprintf("limit max_msgs %d: %d messages were stored after the position, more than the stream keeps", cfg.MaxMsgs, state.LastSeq-pos))
		}
		if cfg.MaxBytes > 0 && discardOld {
			causes = append(causes, fmt.Sprintf("limit max_bytes %d may have removed them (sizes of removed messages are unknown)", cfg.MaxBytes))
		}
		if cfg.MaxAge > 0 {
			c, err := r.ageCause(ctx, st, cfg.MaxAge, pos)
			if err != nil {
				return "", err
			}
			if c != "" {
				causes = append(causes, c)
			}
		}
	}
	return strings.Join(causes, "; "), nil
}

// ageCause says whether MaxAge may have removed records after pos: only when the message
// at pos, which Cairn's trimming keeps, is older than the limit or gone.
func (r *Runtime) ageCause(ctx context.Context, st jetstream.Stream, maxAge time.Duration, pos uint64) (string, error) {
	if pos == 0 {
		return fmt.Sprintf("limit max_age %s may have removed them", maxAge), nil
	}
	m, err := st.GetMsg(ctx, pos)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Sprintf("limit max_age %s may have removed them (the message at the position is gone too)", maxAge), nil
	case err != nil:
		return "", fmt.Errorf("get message %d of input stream %s to check for an input gap: %w", pos, r.cfg.InputStream, err)
	case time.Since(m.Time) > maxAge:
		return fmt.Sprintf("limit max_age %s may have removed them (the message at the position is %s old)", maxAge, time.Since(m.Time).Round(time.Millisecond)), nil
	}
	return "", nil
}

// perSubjectCause says whether MaxMsgsPerSubject may have removed records after pos: when
// a subject one of the filters selects holds that many messages, unless the message at
// pos is still stored on that subject (the limit removes a subject's oldest messages
// first).
func (r *Runtime) perSubjectCause(ctx context.Context, st jetstream.Stream, limit int64, pos uint64) (string, error) {
	var full []string
	for _, filter := range r.cfg.InputFilters {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return "", fmt.Errorf("read the subjects %s of input stream %s to check for an input gap: %w", filter, r.cfg.InputStream, err)
		}
		for subj, n := range info.State.Subjects {
			if int64(n) >= limit && !slices.Contains(full, subj) {
				full = append(full, subj)
			}
		}
	}
	if len(full) > 0 && pos > 0 {
		m, err := st.GetMsg(ctx, pos)
		switch {
		case err == nil:
			full = slices.DeleteFunc(full, func(s string) bool { return s == m.Subject })
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return "", fmt.Errorf("get message %d of input stream %s to check for an input gap: %w", pos, r.cfg.InputStream, err)
		}
	}
	if len(full) == 0 {
		return "", nil
	}
	slices.Sort(full)
	return fmt.Sprintf("limit max_msgs_per_subject %d: subject %s holds that many messages, so the limit may have removed some after the position", limit, strings.Join(full, ", ")), nil
}
