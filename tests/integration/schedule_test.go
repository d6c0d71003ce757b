package integration

import (
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// These tests prove the scheduling rule end to end, through configsvc and real barriers.
// Their margins are wide (hundreds of ms) because they tell the cases apart, they do not
// measure precision: tests/bench does that.

// elapse lets wall-clock time pass: the scenarios need an interval to become overdue.
// It synchronises nothing; every wait for an outcome uses channels or polls.
func elapse(d time.Duration) {
	if d > 0 {
		<-time.After(d)
	}
}

// firstBarrierUnder waits for a barrier sent under config version v (or later).
func firstBarrierUnder(t *testing.T, ch <-chan barrier, v uint64) barrier {
	t.Helper()
	return nextMatching(t, ch, 10*time.Second, "barrier under the new version", func(b barrier) bool { return b.b.ConfigVersion >= v })
}

func TestShorterOverdueIntervalFiresAtOnce(t *testing.T) {
	s := startSystem(t, "j1", "op-0")
	s.waitRegistered("j1", 1)
	bs := s.barriers("j1")
	s.set("j1", `{"interval":"3s"}`)
	b1 := next(t, bs, 10*time.Second, "first barrier")
	elapse(time.Until(b1.at.Add(time.Second))) // 1s after b1: a 500ms interval is overdue, 3s is not
	setAt := time.Now()
	v := s.set("j1", `{"interval":"500ms"}`)
	b2 := firstBarrierUnder(t, bs, v.Version)
	// 1.5 s leaves room for a loaded -race run and still tells "at once" from the 3s
	// interval (due 2s after the change).
	d := b2.at.Sub(setAt)
	t.Logf("overdue barrier came %s after the change", d)
	if d > 1500*time.Millisecond {
		t.Fatalf("overdue barrier came %s after the change; the rule says at once", d)
	}
}

func TestShorterIntervalNotYetDueWaitsForLastTriggerPlusInterval(t *testing.T) {
	s := startSystem(t, "j2", "op-0")
	s.waitRegistered("j2", 1)
	bs := s.barriers("j2")
	s.set("j2", `{"interval":"4s"}`)
	b1 := next(t, bs, 10*time.Second, "first barrier")
	v := s.set("j2", `{"interval":"1500ms"}`)
	b2 := firstBarrierUnder(t, bs, v.Version)
	if gap := b2.at.Sub(b1.at); gap < 1300*time.Millisecond || gap > 3500*time.Millisecond {
		t.Fatalf("gap %s after shortening to 1.5s; want about 1.5s (not at once, not 4s)", gap)
	}
}

func TestLongerIntervalPostponesNextBarrier(t *testing.T) {
	s := startSystem(t, "j3", "op-0")
	s.waitRegistered("j3", 1)
	bs := s.barriers("j3")
	s.set("j3", `{"interval":"500ms"}`)
	b1 := next(t, bs, 10*time.Second, "first barrier")
	v := s.set("j3", `{"interval":"2500ms"}`)
	b2 := nextMatching(t, bs, 10*time.Second, "barrier after lengthening", func(b barrier) bool { return b.b.CheckpointID > b1.b.CheckpointID })
	if b2.b.ConfigVersion < v.Version {
		// One barrier may have been sent under the old version before the change arrived.
		b1 = b2
		b2 = next(t, bs, 10*time.Second, "barrier under the longer interval")
	}
	if gap := b2.at.Sub(b1.at); gap < 2200*time.Millisecond {
		t.Fatalf("gap %s after lengthening to 2.5s: not postponed", gap)
	}
}

func TestMaxConcurrentAndPendingTimeout(t *testing.T) {
	s := startSystem(t, "j4", "op-0")
	s.waitRegistered("j4", 1)
	// A registered instance that never acks keeps every checkpoint pending until timeout.
	s.register("j4", "silent")
	s.waitRegistered("j4", 2)
	evs := s.events("j4")
	v := s.set("j4", `{"interval":"100ms","timeout":"2s","max_concurrent":2}`)
	first := nextMatching(t, evs, 10*time.Second, "aborted checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.ConfigVersion == v.Version && e.Outcome == messages.Aborted
	})
	if first.Reason != messages.AbortTimeout || first.Detail != "no ack from silent within 2s" {
		t.Fatalf("abort reason %s %q", first.Reason, first.Detail)
	}
	if d := first.FinishedAt.Sub(first.TriggeredAt); d < 2*time.Second || d > 4*time.Second {
		t.Fatalf("aborted %s after trigger, want its 2s timeout", d)
	}
	st := s.status("j4")
	if len(st.Pending) > 2 {
		t.Fatalf("%d pending with max_concurrent 2", len(st.Pending))
	}
	// A longer timeout applies to new checkpoints only; pending ones keep theirs.
	v2 := s.set("j4", `{"timeout":"1m"}`)
	for {
		e := next(t, evs, 10*time.Second, "checkpoint event")
		if e.ConfigVersion == v2.Version {
			t.Fatalf("a checkpoint under the 1m timeout ended: %+v", e)
		}
		if e.ConfigVersion == v.Version && e.Outcome == messages.Aborted {
			if d := e.FinishedAt.Sub(e.TriggeredAt); d > 4*time.Second {
				t.Fatalf("pending checkpoint took the new timeout: aborted after %s", d)
			}
		}
		if st := s.status("j4"); len(st.Pending) > 0 && st.Pending[0].ConfigVersion == v2.Version {
			break
		}
	}
	if st := s.status("j4"); st.Pending[0].Deadline.Sub(st.Pending[0].TriggeredAt) != time.Minute {
		t.Fatalf("new checkpoint deadline %s after trigger, want 1m", st.Pending[0].Deadline.Sub(st.Pending[0].TriggeredAt))
	}
	// The silent instance leaves: the next checkpoint proceeds and completes.
	s.deregister("j4", "silent")
	nextMatching(t, evs, 15*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool { return e.Outcome == messages.Completed })
}

func TestStaleAndDuplicateConfigEventsAreIgnored(t *testing.T) {
	s := startSystem(t, "j5", "op-0")
	s.waitRegistered("j5", 1)
	s.set("j5", `{"interval":"2s"}`)
	v := s.set("j5", `{"interval":"3s"}`)
	var before messages.Status
	natstest.Eventually(t, 10*time.Second, "version 2 applied", func() bool {
		before = s.status("j5")
		return before.Config.Version == v.Version && before.AppliedAt != nil
	})
	// Replay version 1 and re-send the current version with another interval, as a
	// redelivery or a rogue publisher would; then a real change, which the coordinator
	// applies after them (one goroutine owns the job, in stream order).
	s.publishConfig("j5", 1, 200*time.Millisecond)
	s.publishConfig("j5", v.Version, 200*time.Millisecond)
	v3 := s.set("j5", `{"interval":"3s","retain":4}`)
	var after messages.Status
	natstest.Eventually(t, 10*time.Second, "version 3 applied", func() bool {
		after = s.status("j5")
		return after.Config.Version == v3.Version
	})
	if after.StaleConfigEvents != 2 || after.EffectiveInterval != "3s" || after.Config.Retain != 4 || !after.AppliedAt.After(*before.AppliedAt) {
		t.Fatalf("stale events: ignored %d (want 2), interval %s, applied %v (before %v)",
			after.StaleConfigEvents, after.EffectiveInterval, after.AppliedAt, before.AppliedAt)
	}
}

func TestMinPauseSeparatesCompletionFromNextTrigger(t *testing.T) {
	s := startSystem(t, "j7", "op-0")
	s.waitRegistered("j7", 1)
	evs := s.events("j7")
	bs := s.barriers("j7")
	v := s.set("j7", `{"interval":"100ms","min_pause":"800ms"}`)
	done := nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	b := nextMatching(t, bs, 10*time.Second, "next barrier", func(b barrier) bool { return b.b.CheckpointID > done.CheckpointID })
	if gap := b.b.TriggeredAt.Sub(done.FinishedAt); gap < 800*time.Millisecond {
		t.Fatalf("next barrier %s after the completion; min_pause is 800ms", gap)
	}
}
