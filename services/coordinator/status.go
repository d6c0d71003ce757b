package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/store"
)

// localStatus asks the job's loop for its status; on failure it returns an error code and
// message instead.
func (s *Service) localStatus(ctx context.Context, name string) (st messages.Status, code, msg string) {
	defer func() {
		if code == "" {
			st.Preferred, st.Replicas = s.replicas.Preferred(name), s.replicas.ids()
		}
	}()
	s.mu.Lock()
	j, e := s.jobs[name], s.known[name]
	var cfg *messages.ConfigEvent
	if e != nil {
		cfg = e.config
	}
	s.mu.Unlock()
	if j == nil && e != nil {
		return s.idleStatus(ctx, name, cfg), "", ""
	}
	if j == nil {
		return st, reply.NotFound, fmt.Sprintf("unknown job %q: it has no config and no registered instance", name)
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, ok := j.Status(qctx)
	if !ok {
		return st, reply.Unavailable, "coordinator busy or stopping; try again"
	}
	return st, "", ""
}

// idleStatus answers status for a parked job from its newest config event ev (nil: none):
// its config, the members the newest manifest holds, and the lease holder if some
// coordinator holds the lease after all (one still parking it, or one that woke it for a
// member removal).
func (s *Service) idleStatus(ctx context.Context, name string, ev *messages.ConfigEvent) messages.Status {
	cfg, version := messages.DefaultConfig(), uint64(0)
	if ev != nil {
		cfg, version = ev.Config, ev.Version
	}
	st := messages.Status{
		Job:         name,
		Coordinator: s.cfg.ID,
		Config:      messages.NewConfigView(name, version, cfg, time.Time{}),
		Instances:   []string{},
		Members:     []messages.Member{},
		Pending:     []messages.PendingCheckpoint{},
		Idle:        true,
		Waiting:     "idle: no registered instance",
	}
	st.EffectiveInterval = st.Config.Interval
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if m, _, err := store.ReadLatest(gctx, s.nc, s.res.Manifests, name); err != nil {
		s.log.Debug().Err(err).Str("job", name).Msg("cannot read the newest manifest of an idle job for its status")
	} else if m != nil {
		st.Members = absentMembers(m)
	}
	if le, err := s.res.Leases.Get(gctx, cairnjs.LeaseKey(name)); err == nil {
		var l messages.Lease
		if messages.Unmarshal(le.Value(), &l) == nil {
			st.Holder = l.Holder
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		s.log.Debug().Err(err).Str("job", name).Msg("cannot read the lease of an idle job for its status")
	}
	return st
}

// absentMembers lists the members manifest m holds, sorted, all absent (an idle job has no
// registered instance): since the manifest says, or since its completion.
func absentMembers(m *messages.Manifest) []messages.Member {
	out := make([]messages.Member, 0, len(m.Instances))
	for _, inst := range slices.Sorted(maps.Keys(m.Instances)) {
		s := m.Instances[inst]
		since := s.AbsentSince
		if since.IsZero() {
			since = m.CompletedAt
		}
		since = since.UTC()
		out = append(out, messages.Member{Instance: inst, Incarnation: s.Incarnation, AbsentSince: &since, Checkpoint: s.From(m.CheckpointID), Positions: s.Positions})
	}
	return out
}
