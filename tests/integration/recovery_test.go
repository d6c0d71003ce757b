package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// deleteCounter deletes job's checkpoint id counter, as `nats kv del CAIRN_MANIFESTS
// <job>.counter` does.
func (s *system) deleteCounter(job string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.res.Manifests.Delete(ctx, cairnjs.CounterKey(job)); err != nil {
		s.t.Fatalf("delete the counter of %s: %v", job, err)
	}
}

// issued checks the checkpoint ids of the barriers a coordinator sends, in the order it
// sent them: each must be above every id issued before it. The completed events arrive on
// another subscription, so a barrier may be drained after the completion of its
// checkpoint: the ids are compared with the barriers before them, not with completions.
type issued struct {
	t    *testing.T
	bs   <-chan barrier
	last uint64
}

// drain takes every barrier sent so far and returns the highest id issued.
func (is *issued) drain() uint64 {
	is.t.Helper()
	for {
		select {
		case b := <-is.bs:
			if b.b.CheckpointID <= is.last {
				is.t.Fatalf("barrier with id %d (coordinator %s, triggered at %s) after id %d was issued",
					b.b.CheckpointID, b.b.Coordinator, b.b.TriggeredAt.Format(time.RFC3339Nano), is.last)
			}
			is.last = b.b.CheckpointID
		default:
			return is.last
		}
	}
}

// completedAbove waits for a completed checkpoint with an id above floor and returns it,
// checking the ids of every barrier sent meanwhile.
func (is *issued) completedAbove(evs <-chan *messages.CheckpointEvent, floor uint64) uint64 {
	is.t.Helper()
	e := nextMatching(is.t, evs, 10*time.Second, fmt.Sprintf("completed checkpoint above id %d", floor), func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.CheckpointID > floor
	})
	is.drain()
	return e.CheckpointID
}

func TestLostCounterContinuesAboveEveryUsedID(t *testing.T) {
	s := startSystem(t, "lc", "lc-0")
	s.waitRegistered("lc", 1)
	evs := s.events("lc")
	is := &issued{t: t, bs: s.barriers("lc")}
	v := s.set("lc", `{"interval":"100ms"}`)
	nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})

	// Lost while the coordinator runs: its next compare-and-set fails, and it continues
	// above the newest manifest and every id it issued itself.
	s.deleteCounter("lc")
	floor := is.completedAbove(evs, is.drain())

	// Overwritten with garbage: as good as lost, it is replaced.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.res.Manifests.Put(ctx, cairnjs.CounterKey("lc"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	floor = is.completedAbove(evs, max(floor, is.drain()))

	// Lost while no coordinator runs: the take-over starts above the newest manifest.
	s.stop("coordinator")
	floor = max(floor, is.drain())
	s.deleteCounter("lc")
	s.startCoordinator("coordinator")
	// The counter comes back above every id used before (a completed event of the stopped
	// coordinator may still be on its way: the new one's are above the counter's start).
	var c messages.Counter
	natstest.Eventually(t, 10*time.Second, fmt.Sprintf("the counter recreated above %d", floor), func() bool {
		gctx, gcancel := context.WithTimeout(context.Background(), time.Second)
		defer gcancel()
		e, err := s.res.Manifests.Get(gctx, cairnjs.CounterKey("lc"))
		return err == nil && messages.Unmarshal(e.Value(), &c) == nil && c.Last > floor
	})
	is.completedAbove(evs, c.Last-1)
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
