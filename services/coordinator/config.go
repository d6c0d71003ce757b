package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func (s *Service) onConfig(ctx context.Context, m jetstream.Msg) {
	job, head, ok := s.cfg.Subjects.ParseConfigEvents(m.Subject())
	if !ok || !s.wanted(job) || messages.ValidateName("job", job) != nil {
		return
	}
	ev, err := configlog.Decode(m.Data(), job)
	switch {
	case err == nil && head:
		s.noteNewest(ctx, job, ev, true)
	case err == nil:
		s.noteConfig(ctx, job, ev)
	case !head && s.headed(job):
		// The head holds the newest version configsvc issued: an invalid event hides none.
		var seq uint64
		if md, merr := m.Metadata(); merr == nil {
			seq = md.Sequence.Stream
		}
		s.skipped.Log(s.log, job, []configlog.Skipped{{Seq: seq, Err: err}})
	default:
		// The consumer delivers only the last message of each subject at start: look for
		// the config in force (configlog.Read) instead of leaving the job on the defaults.
		s.lookUpConfig(ctx, job)
	}
}

// newestValidConfig hands job its config in force (configlog.Read: the newer of its head
// and its last valid event), logging the invalid messages read once each.
func (s *Service) newestValidConfig(ctx context.Context, job string) {
	l, err := configlog.Read(ctx, s.res.Config, s.cfg.Subjects, job, 2*time.Second)
	if err != nil {
		s.log.Error().Err(err).Str("job", job).Msg("invalid config event: cannot read the config in force")
		return
	}
	s.skipped.Log(s.log, job, l.Skipped)
	if l.Event != nil {
		s.noteNewest(ctx, job, l.Event, l.Head != nil)
	}
}

// noteNewest records a config that is not itself an event (a head, or what a look-up
// read) and hands it to the job's loop only when it is newer than the newest config seen:
// an older one or a copy of an applied event is dropped without counting as stale.
// headed records that the job has a valid head.
func (s *Service) noteNewest(ctx context.Context, name string, ev *messages.ConfigEvent, headed bool) {
	s.mu.Lock()
	e := s.entry(name)
	e.headed = e.headed || headed
	newer := e.keep(ev)
	j := s.jobs[name]
	s.mu.Unlock()
	if newer && j != nil {
		j.OfferConfig(ev)
	}
}

// headed reports whether a valid config head of the job was seen.
func (s *Service) headed(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.known[name]
	return e != nil && e.headed
}

// lookUpConfig runs newestValidConfig for the job in the background, at most one at a
// time per job: a request while one runs makes it run once more afterwards, so a burst
// of invalid events costs a few look-ups, not one each.
func (s *Service) lookUpConfig(ctx context.Context, job string) {
	if !s.lookups.begin(job) {
		return
	}
	s.wg.Go(func() {
		for {
			s.newestValidConfig(ctx, job)
			if !s.lookups.again(job) {
				return
			}
		}
	})
}

// lookups tracks the config look-ups running, per job. The zero value is ready to use.
type lookups struct {
	mu sync.Mutex
	// rerun holds the jobs with a look-up running, and whether another was asked for since
	// it started.
	rerun map[string]bool
}

// begin reports whether a look-up for job should start; when one runs already it asks it
// to run again instead.
func (l *lookups) begin(job string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, running := l.rerun[job]; running {
		l.rerun[job] = true
		return false
	}
	if l.rerun == nil {
		l.rerun = map[string]bool{}
	}
	l.rerun[job] = false
	return true
}

// again reports whether the running look-up for job must run once more; when not, the
// look-up ends.
func (l *lookups) again(job string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rerun[job] {
		l.rerun[job] = false
		return true
	}
	delete(l.rerun, job)
	return false
}
