package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// scaleTTL is the lease TTL of the scale-out tests: short, so that leases move quickly.
const scaleTTL = time.Second

// placeWithin bounds how long leases may take to be placed or moved: a few TTLs, with room
// for a busy machine (-race, other tests). The tests log the time it took.
const placeWithin = 10 * scaleTTL

func TestSixJobsSpreadOverTwoCoordinators(t *testing.T) {
	c := newCluster(t, scaleTTL)
	jobs := jobNames("six", 6)
	c.configure(1, 500*time.Millisecond, jobs...)
	for _, j := range jobs {
		c.simulate(j, "op-0")
	}
	c.start("coord-a")
	c.start("coord-b")
	took := c.waitPlaced(jobs, []string{"coord-a", "coord-b"}, placeWithin)
	n := counts(c.holders(jobs))
	t.Logf("6 jobs placed on 2 coordinators in %s: %v", took, n)
	for _, id := range []string{"coord-a", "coord-b"} {
		if n[id] < 2 || n[id] > 4 {
			t.Fatalf("%s holds %d leases, want 2–4: %v", id, n[id], n)
		}
	}
}

// spreadTTL is the lease TTL of TestLeasesSpreadAndMoveWithReplicas, twice scaleTTL: its
// 30 jobs on 3 replicas (90 lease keepers renewing every TTL/3, 60 checkpoints a second)
// load a -race run enough that, on a busy machine, renewals with scaleTTL's 600 ms of room
// missed it ("lease not renewed in time" dozens of times a run) and the leases kept moving
// for more than placeWithin.
const spreadTTL = 2 * scaleTTL

func TestLeasesSpreadAndMoveWithReplicas(t *testing.T) {
	c := newCluster(t, spreadTTL)
	const placeWithin = 10 * spreadTTL
	jobs := jobNames("spread", 30)
	c.configure(1, 500*time.Millisecond, jobs...)
	for _, j := range jobs {
		c.simulate(j, "op-0")
	}
	for _, id := range []string{"r1", "r2", "r3"} {
		c.start(id)
	}
	took := c.waitPlaced(jobs, []string{"r1", "r2", "r3"}, placeWithin)
	n := counts(c.holders(jobs))
	t.Logf("30 jobs placed on 3 replicas in %s: %v", took, n)
	for _, id := range []string{"r1", "r2", "r3"} {
		if n[id] < 7 || n[id] > 13 {
			t.Fatalf("%s holds %d leases, want 10 ± 3: %v", id, n[id], n)
		}
	}
	// Leaving: r3 stops; its jobs move to the other two. Joining: r4 starts and takes its
	// share, some of them from r1 and r2, which hand them over. r4 leaving again gives
	// them back to r1 and r2, whose loops issued ids before: no id is issued twice.
	c.waitProgress(jobs, 2, 10*time.Second)
	c.stop("r3")
	t.Logf("r3 left: leases placed on r1, r2 in %s", c.waitPlaced(jobs, []string{"r1", "r2"}, placeWithin))
	c.waitProgress(jobs, 2, 10*time.Second)
	c.start("r4")
	t.Logf("r4 joined: leases placed on r1, r2, r4 in %s", c.waitPlaced(jobs, []string{"r1", "r2", "r4"}, placeWithin))
	c.waitProgress(jobs, 2, 10*time.Second)
	c.stop("r4")
	t.Logf("r4 left: leases placed on r1, r2 in %s", c.waitPlaced(jobs, []string{"r1", "r2"}, placeWithin))
	c.waitProgress(jobs, 2, 10*time.Second)
	// A crash: r2's leases and announcement expire after a TTL, then r1 takes them all.
	c.crash("r2")
	t.Logf("r2 crashed: leases placed on r1 in %s", c.waitPlaced(jobs, []string{"r1"}, placeWithin))
	c.waitProgress(jobs, 2, 10*time.Second)
	t.Logf("%d barriers checked for ids issued twice", c.checkIDs())
}

func TestJobIsLedWhenItsPreferredReplicaCannotTakeIt(t *testing.T) {
	c := newCluster(t, scaleTTL)
	// "ghost" announces itself as a live replica but coordinates nothing: the jobs
	// preferring it must be taken by the real replica after the grace period.
	ghost, err := messages.Marshal(&messages.Replica{Schema: messages.SchemaVersion, ID: "ghost", StartedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	announce := func() error {
		_, err := c.res.Leases.Put(ctx, cairnjs.ReplicaKey("ghost"), ghost)
		return err
	}
	if err := announce(); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(scaleTTL / 4)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = announce()
			}
		}
	}()
	jobs := jobNames("orphan", 8)
	c.configure(1, 200*time.Millisecond, jobs...)
	for _, j := range jobs {
		c.simulate(j, "op-0")
	}
	svc := c.start("real")
	natstest.Eventually(t, 5*time.Second, "the real replica sees the ghost", func() bool { return len(svc.replicas.ids()) == 2 })
	ghosted := 0
	for _, j := range jobs {
		if svc.replicas.Preferred(j) == "ghost" {
			ghosted++
		}
	}
	if ghosted == 0 {
		t.Fatal("no job prefers the ghost: the test would prove nothing")
	}
	start := time.Now()
	// Expected after the grace period; the 4 s on top leave room for a loaded -race run.
	natstest.Eventually(t, 2*scaleTTL+4*time.Second, "every job is led although its preferred replica never takes it", func() bool {
		return counts(c.holders(jobs))["real"] == len(jobs)
	})
	t.Logf("%d of %d jobs prefer the ghost; all led by the real replica %s after it saw the ghost", ghosted, len(jobs), time.Since(start))
	// It offers them to the ghost again ever more rarely (after 2 TTLs, then 4, …), each
	// time leading them again after the grace period; the other jobs stay put.
	const window = 6 * scaleTTL
	offers := map[string]int{}
	unledSince := map[string]time.Time{}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(window); time.Now().Before(end); <-tick.C {
		now := time.Now()
		for j, h := range c.holders(jobs) {
			switch {
			case h == "real":
				delete(unledSince, j)
			case h != "":
				t.Fatalf("job %s held by %q", j, h)
			case svc.replicas.Preferred(j) != "ghost":
				t.Fatalf("job %s, not preferring the ghost, is unled", j)
			case unledSince[j].IsZero():
				unledSince[j] = now
				offers[j]++
			case now.Sub(unledSince[j]) > 2*scaleTTL+2*time.Second: // a grace period, and room for a loaded -race run
				t.Fatalf("job %s unled for %s", j, now.Sub(unledSince[j]))
			}
		}
	}
	t.Logf("hand-over offers to the ghost in %s: %v", window, offers)
	for j, n := range offers {
		if n > 2 {
			t.Fatalf("job %s offered to the ghost %d times in %s, want at most 2 (backing off)", j, n, window)
		}
	}
	c.waitProgress(jobs, 3, 5*time.Second)
	c.checkIDs()
}
