package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// deleteCounter deletes job's checkpoint id counter, as `nats kv del CAIRN_MANIFESTS
// <job>.counter` does.
func (s *system) deleteCounter(job string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.res.Manifests.Delete(ctx, cjs.CounterKey(job)); err != nil {
		s.t.Fatalf("delete the counter of %s: %v", job, err)
	}
}

// highestBarrier drains bs and returns the highest checkpoint id seen, at least floor; it
// fails the test when the ids do not strictly increase.
func highestBarrier(t *testing.T, bs <-chan barrier, floor uint64) uint64 {
	t.Helper()
	for {
		select {
		case b := <-bs:
			if b.b.CheckpointID <= floor {
				t.Fatalf("barrier with id %d after id %d was issued", b.b.CheckpointID, floor)
			}
			floor = b.b.CheckpointID
		default:
			return floor
		}
	}
}

// completedAbove waits for a completed checkpoint with an id above floor and returns it,
// checking that every barrier sent meanwhile has a new, higher id.
func completedAbove(t *testing.T, evs <-chan *messages.CheckpointEvent, bs <-chan barrier, floor uint64) uint64 {
	t.Helper()
	e := nextMatching(t, evs, 10*time.Second, fmt.Sprintf("completed checkpoint above id %d", floor), func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.CheckpointID > floor
	})
	highestBarrier(t, bs, floor)
	return e.CheckpointID
}

func TestLostCounterContinuesAboveEveryUsedID(t *testing.T) {
	s := startSystem(t, "lc", "lc-0")
	s.waitRegistered("lc", 1)
	evs := s.events("lc")
	bs := s.barriers("lc")
	v := s.set("lc", `{"interval":"100ms"}`)
	nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})

	// Lost while the coordinator runs: its next compare-and-set fails, and it continues
	// above the newest manifest and every id it issued itself.
	s.deleteCounter("lc")
	floor := highestBarrier(t, bs, 0)
	floor = completedAbove(t, evs, bs, floor)

	// Overwritten with garbage: as good as lost, it is replaced.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.res.Manifests.Put(ctx, cjs.CounterKey("lc"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	floor = highestBarrier(t, bs, floor)
	floor = completedAbove(t, evs, bs, floor)

	// Lost while no coordinator runs: the take-over starts above the newest manifest.
	s.stop("coordinator")
	floor = highestBarrier(t, bs, floor)
	s.deleteCounter("lc")
	s.startCoordinator("coordinator")
	completedAbove(t, evs, bs, floor)

	e, err := s.res.Manifests.Get(ctx, cjs.CounterKey("lc"))
	if err != nil {
		t.Fatalf("the counter was not recreated: %v", err)
	}
	var c messages.Counter
	if err := messages.Unmarshal(e.Value(), &c); err != nil || c.Last <= floor {
		t.Fatalf("recreated counter %+v (%v), want last above %d", c, err, floor)
	}
}

func TestInvalidLastConfigEventKeepsTheLastValidVersion(t *testing.T) {
	s := startSystem(t, "mc", "mc-0")
	s.startCoordinator("standby")
	s.waitRegistered("mc", 1)
	s.set("mc", `{"interval":"300ms"}`)
	valid := s.set("mc", `{"interval":"200ms","retain":4}`)
	if _, err := s.js.Publish(context.Background(), subjects.ConfigEvents("mc"), []byte("\xc1 not a config event")); err != nil {
		t.Fatal(err)
	}
	// Both coordinators restart: their consumers deliver only the invalid last event.
	s.stop("coordinator")
	s.stop("standby")
	s.startCoordinator("coordinator")
	s.startCoordinator("standby")
	natstest.Eventually(t, 10*time.Second, fmt.Sprintf("version %d applied after the restart", valid.Version), func() bool {
		st := s.status("mc")
		return st.Config.Version == valid.Version && st.EffectiveInterval == "200ms" && st.Config.Retain == 4
	})

	bs := s.barriers("mc")
	next := s.set("mc", `{"interval":"150ms"}`)
	if next.Version != valid.Version+1 || next.Retain != 4 {
		t.Fatalf("set after the invalid event: %+v, want version %d on top of the last valid one", next, valid.Version+1)
	}
	nextMatching(t, bs, 10*time.Second, fmt.Sprintf("barrier under version %d", next.Version), func(b barrier) bool {
		return b.b.ConfigVersion == next.Version
	})
	if st := s.status("mc"); st.Config.Version != next.Version || st.EffectiveInterval != "150ms" {
		t.Fatalf("status after the set: version %d interval %s, want %d and 150ms", st.Config.Version, st.EffectiveInterval, next.Version)
	}
}
