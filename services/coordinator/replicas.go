package coordinator

import (
	"cmp"
	"context"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/store"
)

// loadSlack is how far above an even share a replica's load may go before a job is
// placed on its next-preferred replica: with n active jobs and r replicas none is
// preferred for more than ceil(1.1·n/r), so 30 jobs on 3 replicas give each 8 to 11.
const loadSlack = 1.1

// replicaSet is the live coordinator replicas and the active jobs (those with a registered
// instance), and places each active job on one replica: rendezvous (highest random
// weight) hashing of (job, replica) with bounded loads. Every replica sees the same
// announcements and registrations, so all agree on the store.Placement once their watches
// have caught up; a disagreement meanwhile costs at most a failed compare-and-set or a
// grace period, never a second holder (the lease is compare-and-set).
type replicaSet struct {
	self string

	mu      sync.Mutex
	live    map[string][]string // replica id → the jobs it coordinates (nil: all)
	active  map[string]bool
	assign  map[string]string // job → preferred replica; nil until computed again
	changed chan struct{}
}

var _ store.Placement = (*replicaSet)(nil)

func newReplicaSet(self string, jobs []string) *replicaSet {
	return &replicaSet{
		self:    self,
		live:    map[string][]string{self: jobs},
		active:  map[string]bool{},
		changed: make(chan struct{}),
	}
}

// Changes implements store.Placement.
func (r *replicaSet) Changes() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// touch drops the cached store.Placement and wakes every waiter; r.mu is held.
func (r *replicaSet) touch() {
	r.assign = nil
	close(r.changed)
	r.changed = make(chan struct{})
}

// setActive records whether the job has a registered instance.
func (r *replicaSet) setActive(job string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active[job] == on {
		return
	}
	if on {
		r.active[job] = true
	} else {
		delete(r.active, job)
	}
	r.touch()
}

// setLive replaces the live replicas (id → jobs). This replica always counts as live.
func (r *replicaSet) setLive(live map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := live[r.self]; !ok {
		live[r.self] = r.live[r.self]
	}
	if maps.EqualFunc(live, r.live, slices.Equal) {
		return
	}
	r.live = live
	r.touch()
}

// ids returns the live replicas, sorted.
func (r *replicaSet) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.live))
}

// Preferred implements store.Placement. An inactive job (one woken only for a member removal)
// gets its plain rendezvous winner.
func (r *replicaSet) Preferred(job string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.assign == nil {
		r.assign = place(slices.Sorted(maps.Keys(r.active)), r.live)
	}
	if id, ok := r.assign[job]; ok {
		return id
	}
	if ranked := rank(job, r.live); len(ranked) > 0 {
		return ranked[0]
	}
	return r.self
}

// place assigns each job (in the given order) to the replica of highest weight among
// those that coordinate it and have room, or to the highest one when none has room.
func place(jobs []string, live map[string][]string) map[string]string {
	out := make(map[string]string, len(jobs))
	if len(live) == 0 {
		return out
	}
	limit := int(math.Ceil(loadSlack * float64(len(jobs)) / float64(len(live))))
	load := map[string]int{}
	for _, job := range jobs {
		ranked := rank(job, live)
		if len(ranked) == 0 {
			continue
		}
		pick := ranked[0]
		for _, id := range ranked {
			if load[id] < limit {
				pick = id
				break
			}
		}
		load[pick]++
		out[job] = pick
	}
	return out
}

// rank returns the replicas that coordinate job, highest rendezvous weight first.
func rank(job string, live map[string][]string) []string {
	ids := make([]string, 0, len(live))
	for id, jobs := range live {
		if len(jobs) == 0 || slices.Contains(jobs, job) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(weight(job, b), weight(job, a)), strings.Compare(a, b))
	})
	return ids
}

// weight is the rendezvous weight of (job, replica): FNV-1a, then a 64-bit finalizer
// (splitmix64) so that ids differing in one character spread evenly.
func weight(job, replica string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(job))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(replica))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// runReplica announces this coordinator under coordinator.<id> in CAIRN_LEASES, renewed
// every TTL/3, once ready is closed (its jobs' loops are running, so that the jobs handed
// to it find a competitor), and follows the other replicas' announcements until ctx is
// done; then it deletes its own, so that the others take its jobs at once.
func (s *Service) runReplica(ctx context.Context, ttl time.Duration, ready <-chan struct{}) {
	key := cairnjs.ReplicaKey(s.cfg.ID)
	value, err := messages.Marshal(&messages.Replica{Schema: messages.SchemaVersion, ID: s.cfg.ID, Jobs: s.cfg.Jobs, StartedAt: time.Now().UTC()})
	if err != nil {
		s.log.Error().Err(err).Msg("cannot encode the replica announcement; this coordinator takes jobs only after their grace period")
		return
	}
	f := store.NewFollow(s.res.Leases, s.nc, cairnjs.ReplicaKey("*"))
	defer f.Close()
	watch := func() <-chan jetstream.KeyValueEntry {
		updates, err := f.Start(ctx)
		if err != nil {
			if msg := "cannot watch the coordinator replicas; retrying"; s.noise.Allow(msg) {
				s.log.Warn().Err(err).Msg(msg)
			}
		}
		return updates
	}
	updates := watch()
	var snapshot map[string][]string // replicas of the watch's initial values, until they end
	if updates != nil {
		snapshot = map[string][]string{}
	}
	live := map[string][]string{}
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := s.res.Leases.Delete(dctx, key); err != nil {
				s.log.Debug().Err(err).Msg("replica announcement not deleted; it expires by TTL")
			}
			cancel()
			return
		case <-ready:
			ready = nil
			timer.Reset(0)
		case <-f.Reconnected():
			updates, snapshot = watch(), map[string][]string{}
			timer.Reset(0)
		case e, ok := <-updates:
			switch {
			case !ok:
				updates = nil
			case e == nil:
				live, snapshot = snapshot, nil
				s.replicas.setLive(maps.Clone(live))
			case snapshot != nil:
				if id, jobs, ok := s.replica(e); ok && e.Operation() == jetstream.KeyValuePut {
					snapshot[id] = jobs
				}
			default:
				id, jobs, ok := s.replica(e)
				if !ok {
					break
				}
				if e.Operation() == jetstream.KeyValuePut {
					live[id] = jobs
				} else {
					delete(live, id)
				}
				s.replicas.setLive(maps.Clone(live))
			}
		case <-timer.C:
			if updates == nil {
				updates, snapshot = watch(), map[string][]string{}
			}
			if ready == nil {
				pctx, cancel := context.WithTimeout(ctx, ttl/3)
				if _, err := s.res.Leases.Put(pctx, key, value); err != nil {
					if msg := "cannot renew the replica announcement"; s.noise.Allow(msg) {
						s.log.Warn().Err(err).Msg(msg)
					}
				}
				cancel()
			}
			timer.Reset(ttl / 3)
		}
	}
}

// replica decodes a replica announcement; a deletion gives the id from the key. ok is
// false for an entry to skip.
func (s *Service) replica(e jetstream.KeyValueEntry) (id string, jobs []string, ok bool) {
	id, found := strings.CutPrefix(e.Key(), cairnjs.ReplicaKey(""))
	if !found || id == "" {
		return "", nil, false
	}
	if e.Operation() != jetstream.KeyValuePut {
		return id, nil, true
	}
	var r messages.Replica
	if err := messages.Unmarshal(e.Value(), &r); err != nil || r.ID != id {
		if msg := "replica announcement skipped: cannot decode or does not match its key"; s.noise.Allow(msg) {
			s.log.Error().Err(err).Str("key", e.Key()).Msg(msg)
		}
		return "", nil, false
	}
	return id, r.Jobs, true
}
