package chaos

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Sizes of a chaos run. The acceptance criteria ask for at least 20 operator kills, at
// least 5 kills of the lease holder and one NATS restart; a few more kills than the
// minimum leave room for a kill that finds nothing to do. Issue 7 adds SIGTERM restarts,
// one operator kept away far longer than retain × interval, and a duplicate instance.
const (
	operatorKills = 24
	operatorTerms = 8
	holderKills   = 6
	configChanges = 8
	// retain is the number of checkpoints the job retains during the storm: with the
	// longest interval (1 s) an absence of awayMin outlasts every retained checkpoint.
	retain  = 2
	awayMin = 8 * time.Second
	awayMax = 12 * time.Second
)

// intervals are the checkpoint intervals the schedule picks from: short enough that many
// checkpoints run during the storm, varied so that re-timing is exercised both ways.
var intervals = []time.Duration{
	150 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond,
	500 * time.Millisecond, 750 * time.Millisecond, time.Second,
}

// schedule is the seeded plan of a chaos run: what happens when, as offsets from the start
// of the storm. The same seed gives the same plan; what the processes are doing at each
// moment still varies from run to run.
type schedule struct {
	seed  uint64
	storm time.Duration
	// operators are the operator kills, in time order.
	operators []operatorKill
	// control are the holder kills and the NATS restart, in time order; they run one at a
	// time so that each fail-over is measured on its own.
	control []controlAction
	// configs are the interval changes, in time order.
	configs []configChange
	// duplicate starts a second process with an instance id in use.
	duplicate duplicateStart
}

// operatorKill SIGKILLs one operator instance, or stops it with SIGTERM when graceful, and
// restarts it after down.
type operatorKill struct {
	at       time.Duration
	instance int
	graceful bool
	// away marks the one long absence: down is between awayMin and awayMax, far longer
	// than retain × interval and the registration TTL, so checkpoints complete without the
	// instance and retention drops every manifest it took part in.
	away bool
	// afterBarrier makes the kill wait for the next barrier and strike offset after it:
	// storing and acking a small snapshot takes a few milliseconds, so the kill often
	// lands in between.
	afterBarrier bool
	offset       time.Duration
	// settle is how long the kill waits after a restart when the instance is still down at
	// the planned moment (an earlier kill's restart is pending): the kill then lands while
	// the new run restores its state or soon after.
	settle time.Duration
	down   time.Duration
}

// duplicateStart starts a second process with instance's id at, while the instance runs;
// within 15 s one of the two must exit non-zero. The survivor runs for hold, then the
// harness puts the original process back (when it was the one that exited).
type duplicateStart struct {
	at       time.Duration
	instance int
	hold     time.Duration
}

// controlAction SIGKILLs the coordinator holding the job's lease, or the nats-server when
// natsRestart is set, and restarts it after down.
type controlAction struct {
	at          time.Duration
	natsRestart bool
	down        time.Duration
}

// configChange sets the job's checkpoint interval.
type configChange struct {
	at       time.Duration
	interval time.Duration
}

// newSchedule draws the plan of a storm of the given length from seed.
func newSchedule(seed uint64, storm time.Duration) schedule {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := schedule{seed: seed, storm: storm}
	// Operator kills at uniformly random moments, leaving the first seconds for the
	// system to settle and the last ones for the restarts to finish.
	for range operatorKills {
		k := operatorKill{
			at:       rngBetween(rng, 3*time.Second, storm-8*time.Second),
			instance: rng.IntN(instances),
			settle:   rngBetween(rng, 10*time.Millisecond, 1500*time.Millisecond),
			down:     rngBetween(rng, 100*time.Millisecond, 2500*time.Millisecond),
		}
		if rng.IntN(2) == 0 {
			k.afterBarrier, k.offset = true, rngBetween(rng, 0, 3*time.Millisecond)
		}
		s.operators = append(s.operators, k)
	}
	// SIGTERM restarts: each must drain and exit 0.
	for range operatorTerms {
		k := operatorKill{
			at:       rngBetween(rng, 3*time.Second, storm-8*time.Second),
			instance: rng.IntN(instances),
			graceful: true,
			settle:   rngBetween(rng, 10*time.Millisecond, 1500*time.Millisecond),
			down:     rngBetween(rng, 100*time.Millisecond, 2500*time.Millisecond),
		}
		if rng.IntN(2) == 0 {
			k.afterBarrier, k.offset = true, rngBetween(rng, 0, 3*time.Millisecond)
		}
		s.operators = append(s.operators, k)
	}
	// The long absence, by SIGKILL or SIGTERM, early enough to end well before the storm.
	s.operators = append(s.operators, operatorKill{
		at:       rngBetween(rng, storm/6, storm/2),
		instance: rng.IntN(instances),
		graceful: rng.IntN(2) == 0,
		away:     true,
		settle:   rngBetween(rng, 10*time.Millisecond, 1500*time.Millisecond),
		down:     rngBetween(rng, awayMin, awayMax),
	})
	slices.SortFunc(s.operators, func(a, b operatorKill) int { return int(a.at - b.at) })
	s.duplicate = duplicateStart{
		at:       rngBetween(rng, storm/2, storm*3/4),
		instance: rng.IntN(instances),
		hold:     rngBetween(rng, 2*time.Second, 5*time.Second),
	}

	// Control actions: one per slot, the NATS restart in one of the middle slots, each at
	// a random moment in the first half of its slot.
	slots := holderKills + 1
	natsSlot := 2 + rng.IntN(slots-4)
	slot := storm / time.Duration(slots)
	for i := range slots {
		a := controlAction{at: time.Duration(i)*slot + rngBetween(rng, 2*time.Second, slot/2)}
		if i == natsSlot {
			a.natsRestart, a.down = true, rngBetween(rng, time.Second, 4*time.Second)
		} else {
			a.down = rngBetween(rng, 300*time.Millisecond, 3*time.Second)
		}
		s.control = append(s.control, a)
	}

	// Config changes: one per slot, never the interval already in force.
	slot = storm / configChanges
	last := initialInterval
	for i := range configChanges {
		iv := last
		for iv == last {
			iv = intervals[rng.IntN(len(intervals))]
		}
		last = iv
		s.configs = append(s.configs, configChange{at: time.Duration(i)*slot + rngBetween(rng, slot/5, slot*4/5), interval: iv})
	}
	return s
}

// rngBetween draws a duration in [lo, hi] from rng.
func rngBetween(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}
