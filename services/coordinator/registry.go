package coordinator

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// jobEntry is what the coordinator knows of a job whether its loop runs or not. A job
// runs (loop, lease keeper, retention worker) while it has a registered instance or a
// member removal in progress; otherwise it is parked: it holds no lease, runs no timer
// and writes nothing, and status answers from this entry.
type jobEntry struct {
	// config is the newest valid config event seen.
	config *messages.ConfigEvent
	// instances are the registered instances (instance → incarnation).
	instances map[string]string
	// pins count the member removals in progress, which keep the job running.
	pins int
	// stop ends the running loop; nil while parked.
	stop context.CancelFunc
	// parkGen tells a park timer whether the job woke (and maybe idled again) since.
	parkGen uint64
	// headed is set once a valid config head of the job was seen.
	headed bool
}

// keep records ev as the newest config seen when it is newer than the one recorded, and
// reports whether it was.
func (e *jobEntry) keep(ev *messages.ConfigEvent) bool {
	if e.config != nil && ev.Version <= e.config.Version {
		return false
	}
	e.config = ev
	return true
}

// idle reports whether nothing keeps the job running.
func (e *jobEntry) idle() bool { return len(e.instances) == 0 && e.pins == 0 }

// parkAfter is how long a job without instances keeps running before it is parked: an
// instance that restarts within it finds its job led, and the last retention pass has
// time to end.
func (s *Service) parkAfter() time.Duration { return s.ttl }

// entry returns the job's entry, creating it; s.mu is held.
func (s *Service) entry(name string) *jobEntry {
	e, ok := s.known[name]
	if !ok {
		e = &jobEntry{instances: map[string]string{}}
		s.known[name] = e
	}
	return e
}

// noteConfig records a config event and hands it to the job's loop if it runs.
func (s *Service) noteConfig(ctx context.Context, name string, ev *messages.ConfigEvent) {
	s.mu.Lock()
	s.entry(name).keep(ev)
	j := s.jobs[name]
	s.mu.Unlock()
	if j != nil {
		j.OfferConfig(ev)
	}
}

// noteRegistration records a registration change, wakes the job on its first instance
// and hands the change to its loop; the job is parked a while after its last instance
// left.
func (s *Service) noteRegistration(ctx context.Context, name string, u loop.Registration) {
	s.mu.Lock()
	e, known := s.known[name]
	if !known && u.Incarnation == "" {
		s.mu.Unlock()
		return
	}
	if !known {
		e = s.entry(name)
	}
	if u.Incarnation == "" {
		delete(e.instances, u.Instance)
	} else {
		e.instances[u.Instance] = u.Incarnation
	}
	j := s.jobs[name]
	woke := j == nil && u.Incarnation != ""
	if woke {
		j = s.wake(ctx, name, e)
	}
	s.settle(name, e)
	s.mu.Unlock()
	if j != nil && !woke {
		j.OfferRegistration(u)
	}
}

// syncRegistrations records every job's full set of registered instances, wakes the jobs
// that have one and hands the running ones their set.
func (s *Service) syncRegistrations(ctx context.Context, all map[string]map[string]string) {
	type syncTo struct {
		j   *loop.Job
		all map[string]string
	}
	var syncs []syncTo
	s.mu.Lock()
	for name := range all {
		s.entry(name)
	}
	for name, e := range s.known {
		e.instances = maps.Clone(all[name])
		if e.instances == nil {
			e.instances = map[string]string{}
		}
		if j := s.jobs[name]; j != nil {
			syncs = append(syncs, syncTo{j, maps.Clone(e.instances)})
		} else if len(e.instances) > 0 {
			s.wake(ctx, name, e)
		}
		s.settle(name, e)
	}
	s.mu.Unlock()
	for _, x := range syncs {
		x.j.OfferRegistration(loop.Registration{Sync: true, All: x.all})
	}
}

// wake starts the job's loop and hands it the config and registrations known so far,
// before anyone else can reach it; s.mu is held.
func (s *Service) wake(ctx context.Context, name string, e *jobEntry) *loop.Job {
	jctx, cancel := context.WithCancel(ctx)
	e.stop = cancel
	j := s.start(jctx, name)
	if e.config != nil {
		j.OfferConfig(e.config)
	}
	j.OfferRegistration(loop.Registration{Sync: true, All: maps.Clone(e.instances)})
	s.log.Debug().Str("job", name).Int("instances", len(e.instances)).Int("removals", e.pins).Msg("job woke")
	return j
}

// settle places the job among the active ones when it has an instance, and parks it a
// while after it went idle; s.mu is held. A job stays active until it is parked, so that
// its lease does not move while it lingers; one woken only for a member removal is not
// active (it is placed on its plain rendezvous winner, where the removal was sent).
func (s *Service) settle(name string, e *jobEntry) {
	if len(e.instances) > 0 {
		s.replicas.setActive(name, true)
	}
	if !e.idle() || e.stop == nil {
		return
	}
	e.parkGen++
	gen := e.parkGen
	time.AfterFunc(s.parkAfter(), func() { s.park(name, gen) })
}

// park stops the job's loop, lease keeper and retention worker if it is still idle since
// the park timer gen was set; the lease keeper releases the lease.
func (s *Service) park(name string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.known[name]
	if e == nil || e.parkGen != gen || !e.idle() || e.stop == nil {
		return
	}
	e.stop()
	e.stop = nil
	delete(s.jobs, name)
	s.replicas.setActive(name, false)
	s.log.Info().Str("job", name).Msg("job idle: no registered instance; parked")
}

// pin keeps a known job running (waking it) until the returned release is called; ok is
// false for a job this coordinator has never heard of.
func (s *Service) pin(ctx context.Context, name string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, known := s.known[name]
	if !known {
		return nil, false
	}
	e.pins++
	if e.stop == nil {
		s.wake(ctx, name, e)
	}
	done := false
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !done {
			done = true
			e.pins--
			s.settle(name, e)
		}
	}, true
}

// wakeFor returns the job's running loop and a release to call once a request that only
// the lease holder answers (a member removal, a manual checkpoint, a savepoint deletion)
// is decided. The job is kept running until release (a parked one is woken), and this
// replica waits until it holds the lease, which it takes at once as the job's preferred
// replica (otherwise after the grace period). When it cannot, or the job was never heard
// of, it calls fail with the reason (unchanged says what the caller can rely on) and
// returns a nil loop.
func (s *Service) wakeFor(ctx context.Context, name, unchanged string, fail func(*reply.Coded)) (*loop.Job, func()) {
	release, known := s.pin(ctx, name)
	if !known {
		fail(reply.New(reply.NotFound, fmt.Sprintf("unknown job %q: it has no config and no registered instance", name)))
		return nil, nil
	}
	wait := 2*s.ttl + 2*time.Second
	deadline := time.Now().Add(wait)
	// The loop learns of the lease from its keeper: poll its status, briefly.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, code, msg := s.localStatus(ctx, name)
		switch {
		case code != "":
			release()
			fail(reply.New(code, msg))
			return nil, nil
		case st.Holder == s.cfg.ID:
			return s.lookup(name), release
		case st.Holder != "":
			release()
			fail(reply.New(reply.Unavailable, fmt.Sprintf("coordinator %s holds the lease of job %s; %s, try again", st.Holder, name, unchanged)))
			return nil, nil
		case time.Now().After(deadline):
			release()
			fail(reply.New(reply.Unavailable, fmt.Sprintf("coordinator %s could not take the lease of idle job %s within %s; %s, try again", s.cfg.ID, name, wait, unchanged)))
			return nil, nil
		}
		select {
		case <-ctx.Done():
			release()
			fail(reply.New(reply.Unavailable, "coordinator stopping; "+unchanged))
			return nil, nil
		case <-tick.C:
		}
	}
}
