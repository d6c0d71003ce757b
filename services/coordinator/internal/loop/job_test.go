package loop

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// harness runs one job loop inside a synctest bubble: time is fake and advances only when
// every goroutine of the bubble is blocked, so the assertions on barrier times are exact.
type harness struct {
	t      *testing.T
	f      *fakeBackend
	j      *Job
	t0     time.Time
	cancel context.CancelFunc
}

func newHarness(t *testing.T, instances ...string) *harness {
	return newHarnessWith(t, &fakeBackend{}, instances...)
}

// newHarnessWith is newHarness on a given fake Backend (a previous coordinator's state).
func newHarnessWith(t *testing.T, f *fakeBackend, instances ...string) *harness {
	return newHarnessOf(t, f, newJob("demo", "c1", f, zerolog.Nop()), instances...)
}

// newHarnessOf is newHarnessWith on a given job of f, not yet running.
func newHarnessOf(t *testing.T, f *fakeBackend, j *Job, instances ...string) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	go j.Run(ctx)
	h := &harness{t: t, f: f, j: j, t0: time.Now(), cancel: cancel}
	j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(1000 * time.Hour), Holder: "c1"})
	for _, i := range instances {
		j.mail.offerReg(Registration{Instance: i, Incarnation: "inc-" + i})
	}
	synctest.Wait()
	return h
}

func (h *harness) stop() {
	h.cancel()
	synctest.Wait()
}

// config delivers config version v, the defaults changed by mutate.
func (h *harness) config(v uint64, mutate func(*messages.CheckpointConfig)) {
	c := messages.DefaultConfig()
	mutate(&c)
	h.j.mail.offerConfig(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: "demo", Version: v, Config: c, Time: time.Now()})
	synctest.Wait()
}

// at advances the fake clock to t0+d.
func (h *harness) at(d time.Duration) {
	h.t.Helper()
	if wait := h.t0.Add(d).Sub(time.Now()); wait > 0 {
		time.Sleep(wait)
	}
	synctest.Wait()
}

// ack sends an ack (or a decline with reason) of checkpoint id from each instance.
func (h *harness) ack(id uint64, reason string, instances ...string) {
	for _, i := range instances {
		a := &messages.Ack{Schema: messages.SchemaVersion, Job: "demo", CheckpointID: id, Instance: i, Incarnation: "inc-" + i,
			Kind: messages.AckDone, Snapshot: messages.SnapshotRef{Object: fmt.Sprintf("demo/%d/%s", id, i), Size: 10, Digest: "SHA-256=x"},
			Positions: map[string]uint64{"CAIRN_INPUT": 10 * id}, Filters: map[string][]string{"CAIRN_INPUT": {"cairn.input.demo." + i}}}
		if reason != "" {
			a.Kind, a.Reason = messages.AckDeclined, reason
		}
		h.j.mail.acks <- a
	}
	synctest.Wait()
}

func (h *harness) status() messages.Status {
	reply := make(chan messages.Status, 1)
	h.j.status <- reply
	return <-reply
}

// barrierTimes are the offsets from t0 of every barrier sent so far.
func (h *harness) barrierTimes() []time.Duration {
	var out []time.Duration
	for _, b := range h.f.sent() {
		out = append(out, b.at.Sub(h.t0))
	}
	return out
}

func (h *harness) wantBarriers(want ...time.Duration) {
	h.t.Helper()
	if got := h.barrierTimes(); !slices.Equal(got, want) {
		h.t.Fatalf("barriers at %v, want %v", got, want)
	}
}

const s = time.Second

func every(interval time.Duration) func(*messages.CheckpointConfig) {
	return func(c *messages.CheckpointConfig) { c.Interval = interval }
}

// TestIntervalChangeRetimesTheNextBarrier runs the scheduling rule's three cases for a
// new interval: the first barrier goes at 10s under a 10s interval, then the interval
// changes at changeAt.
func TestIntervalChangeRetimesTheNextBarrier(t *testing.T) {
	tests := []struct {
		name     string
		changeAt time.Duration
		interval time.Duration
		fireAt   time.Duration
	}{
		{"shorter and overdue fires at once", 16 * s, 5 * s, 16 * s},
		{"shorter not yet due fires at last trigger plus interval", 12 * s, 5 * s, 15 * s},
		{"longer postpones", 12 * s, 30 * s, 40 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, "a")
				defer h.stop()
				h.config(1, every(10*s))
				h.at(10 * s)
				h.ack(1, "", "a")
				h.at(tt.changeAt)
				h.config(2, every(tt.interval))
				if tt.fireAt > tt.changeAt {
					h.at(tt.fireAt - time.Millisecond)
					h.wantBarriers(10 * s)
				}
				h.at(tt.fireAt)
				h.wantBarriers(10*s, tt.fireAt)
				if v := h.f.sent()[1].b.ConfigVersion; v != 2 {
					t.Fatalf("second barrier ran under config version %d, want 2", v)
				}
				h.ack(2, "", "a")
				if next := h.status().NextTrigger; next == nil || !next.Equal(h.t0.Add(tt.fireAt+tt.interval).UTC()) {
					t.Fatalf("next trigger %v, want t0+%s", next, tt.fireAt+tt.interval)
				}
			})
		})
	}
}

func TestMinPauseCountsFromCompletion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.MinPause = s, 5*s })
		h.at(1 * s)
		h.at(3 * s)
		h.ack(1, "", "a")
		h.at(7 * s)
		h.wantBarriers(1 * s)
		h.at(8 * s)
		h.wantBarriers(1*s, 8*s)
	})
}

func TestMaxConcurrentBoundsPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.MaxConcurrent, c.Timeout = s, 2, time.Hour })
		h.at(10 * s)
		h.wantBarriers(1*s, 2*s)
		if st := h.status(); len(st.Pending) != 2 || st.NextTrigger != nil || st.Waiting == "" {
			t.Fatalf("status: pending %d, next %v, waiting %q", len(st.Pending), st.NextTrigger, st.Waiting)
		}
		h.ack(1, "", "a")
		h.wantBarriers(1*s, 2*s, 10*s)
	})
}

func TestPendingCheckpointKeepsItsTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = 5*s, 10*s })
		h.at(5 * s)
		h.config(2, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = 5*s, time.Hour })
		h.at(15*s - time.Millisecond)
		if got := h.f.eventsOf(messages.Aborted); len(got) != 0 {
			t.Fatalf("aborted before its own timeout: %+v", got)
		}
		h.at(15 * s)
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 1 || ab[0].Reason != messages.AbortTimeout || ab[0].CheckpointID != 1 || ab[0].ConfigVersion != 1 {
			t.Fatalf("aborted events %+v, want checkpoint 1 timed out under version 1", ab)
		}
		h.wantBarriers(5*s, 15*s)
		if st := h.status(); !st.Pending[0].Deadline.Equal(h.t0.Add(15*s + time.Hour).UTC()) {
			t.Fatalf("new checkpoint deadline %v, want t0+1h15s", st.Pending[0].Deadline)
		}
	})
}

func TestStaleAndDuplicateVersionsChangeNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(2, every(5*s))
		before := h.status()
		h.config(2, every(100*time.Millisecond))
		h.config(1, every(100*time.Millisecond))
		after := h.status()
		if after.Config.Version != 2 || after.EffectiveInterval != "5s" || !after.AppliedAt.Equal(*before.AppliedAt) || after.StaleConfigEvents != 2 {
			t.Fatalf("status after stale versions: version %d interval %s applied %v", after.Config.Version, after.EffectiveInterval, after.AppliedAt)
		}
		h.at(5 * s)
		h.ack(1, "", "a")
		h.at(10 * s)
		h.wantBarriers(5*s, 10*s)
	})
}

func TestNoBarrierWithoutInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		defer h.stop()
		h.config(1, every(s))
		h.at(5 * s)
		h.wantBarriers()
		if st := h.status(); st.Waiting != "no registered instance" {
			t.Fatalf("waiting %q", st.Waiting)
		}
		h.j.mail.offerReg(Registration{Instance: "a", Incarnation: "inc-a"})
		synctest.Wait()
		h.wantBarriers(5 * s)
	})
}

func TestCompletionWritesManifestAndEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b", "c")
		defer h.stop()
		h.config(3, every(s))
		h.at(s)
		h.ack(1, "", "a", "b")
		if len(h.f.manifests) != 0 {
			t.Fatal("completed before every instance acked")
		}
		h.at(1500 * time.Millisecond)
		h.ack(1, "", "c")
		if len(h.f.manifests) != 1 || len(h.f.manifests[0].Instances) != 3 || h.f.manifests[0].ConfigVersion != 3 {
			t.Fatalf("manifests %+v", h.f.manifests)
		}
		ev := h.f.eventsOf(messages.Completed)
		if len(ev) != 1 || ev[0].ConfigVersion != 3 || ev[0].Bytes != 30 || len(ev[0].Participants) != 3 {
			t.Fatalf("completed events %+v", ev)
		}
		st := h.status()
		if st.Completed != 1 || st.LastCompleted == nil || st.LastCompleted.Duration != "500ms" || h.f.retains != 1 {
			t.Fatalf("status %+v retains %d", st, h.f.retains)
		}
	})
}

func TestDeclineAbortsAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, every(s))
		h.at(s)
		h.ack(1, "", "a")
		h.ack(1, "disk full", "b")
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 1 || ab[0].Reason != messages.AbortDeclined || ab[0].Detail != "b declined: disk full" {
			t.Fatalf("aborted %+v", ab)
		}
		if st := h.status(); st.ConsecutiveFailures != 1 || st.Failed {
			t.Fatalf("failures %d failed %v", st.ConsecutiveFailures, st.Failed)
		}
		h.ack(1, "", "b")
		if st := h.status(); st.LateAcks != 1 {
			t.Fatalf("late acks %d, want 1", st.LateAcks)
		}
	})
}

func TestLostOrRestartedInstanceAbortsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.at(s)
		h.j.mail.offerReg(Registration{Instance: "b", Incarnation: "inc-b2"})
		synctest.Wait()
		h.at(2 * s)
		h.j.mail.offerReg(Registration{Instance: "a"})
		synctest.Wait()
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 2 || ab[0].Reason != messages.AbortInstanceLost || ab[1].Reason != messages.AbortInstanceLost {
			t.Fatalf("aborted %+v", ab)
		}
		if st := h.status(); st.ConsecutiveFailures != 0 || !slices.Equal(st.Instances, []string{"b"}) {
			t.Fatalf("instance loss counted as failure or instances wrong: %+v", st)
		}
	})
}

func TestTolerableFailuresMarksFailedAndSuccessClears(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout, c.TolerableFailures = s, s, 2 })
		h.at(2 * s)
		h.at(3 * s)
		if st := h.status(); st.ConsecutiveFailures != 2 || st.Failed {
			t.Fatalf("after 2 timeouts: %d failed=%v", st.ConsecutiveFailures, st.Failed)
		}
		h.at(4 * s)
		ab := h.f.eventsOf(messages.Aborted)
		if st := h.status(); st.ConsecutiveFailures != 3 || !st.Failed || !ab[2].Failed || ab[1].Failed {
			t.Fatalf("after 3 timeouts: %d failed=%v events %+v", st.ConsecutiveFailures, st.Failed, ab)
		}
		h.ack(4, "", "a")
		if st := h.status(); st.ConsecutiveFailures != 0 || st.Failed {
			t.Fatalf("after a success: %d failed=%v", st.ConsecutiveFailures, st.Failed)
		}
	})
}

func TestNewerCompletionSubsumesOlder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.MaxConcurrent, c.Timeout = s, 2, time.Hour })
		h.at(2 * s)
		h.ack(2, "", "a")
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 1 || ab[0].CheckpointID != 1 || ab[0].Reason != messages.AbortSubsumed {
			t.Fatalf("aborted %+v", ab)
		}
		if st := h.status(); st.ConsecutiveFailures != 0 {
			t.Fatalf("subsumption counted as failure")
		}
	})
}

func TestStorageErrorAbortsAndFencingStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, every(s))
		h.f.mu.Lock()
		h.f.failWrite = errDisk
		h.f.mu.Unlock()
		h.at(s)
		h.ack(1, "", "a")
		if ab := h.f.eventsOf(messages.Aborted); len(ab) != 1 || ab[0].Reason != messages.AbortStorage {
			t.Fatalf("aborted %+v", ab)
		}
		h.f.mu.Lock()
		h.f.failWrite = ErrFenced
		h.f.mu.Unlock()
		h.at(2 * s)
		h.ack(2, "", "a")
		if ab := h.f.eventsOf(messages.Aborted); len(ab) != 2 || ab[1].Reason != messages.AbortCoordinatorChange {
			t.Fatalf("aborted %+v", ab)
		}
		h.at(10 * s)
		h.wantBarriers(s, 2*s)
	})
}

func TestLeaseExpiryFencesWithoutRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(2500 * time.Millisecond), Holder: "c1"})
		h.at(2 * s)
		h.ack(1, "", "a")
		h.at(10 * s)
		h.wantBarriers(s, 2*s)
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 1 || ab[0].CheckpointID != 2 || ab[0].Reason != messages.AbortCoordinatorChange {
			t.Fatalf("aborted %+v, want checkpoint 2 aborted by the fence at 2.5s", ab)
		}
		if st := h.status(); st.Waiting == "" || st.NextTrigger != nil {
			t.Fatalf("fenced coordinator still schedules: %+v", st)
		}
	})
}

func TestTakeOverAbortsWhatThePreviousHolderLeftAndContinuesIds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeBackend{last: 5, latest: &messages.Manifest{CheckpointID: 3, TriggeredAt: time.Now().Add(-2 * s), CompletedAt: time.Now().Add(-2 * s)}}
		j := newJob("demo", "c2", f, zerolog.Nop())
		ctx, cancel := context.WithCancel(context.Background())
		defer func() { cancel(); synctest.Wait() }()
		go j.Run(ctx)
		t0 := time.Now()
		j.mail.offerConfig(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: "demo", Version: 1, Config: messages.DefaultConfig(), Time: t0})
		j.mail.offerReg(Registration{Instance: "a", Incarnation: "inc-a"})
		j.mail.offerLease(Lease{Held: true, ValidUntil: t0.Add(time.Hour), Holder: "c2"})
		synctest.Wait()
		ab := f.eventsOf(messages.Aborted)
		if len(ab) != 2 || ab[0].CheckpointID != 4 || ab[1].CheckpointID != 5 || ab[0].Reason != messages.AbortCoordinatorChange {
			t.Fatalf("aborted on take-over: %+v, want 4 and 5", ab)
		}
		j.mail.acks <- &messages.Ack{Schema: messages.SchemaVersion, Job: "demo", CheckpointID: 5, Instance: "a", Incarnation: "inc-a", Kind: messages.AckDone,
			Snapshot: messages.SnapshotRef{Object: "o", Digest: "d"}}
		synctest.Wait()
		// The schedule continues from the newest manifest: 10s after its trigger.
		time.Sleep(8 * s)
		synctest.Wait()
		reply := make(chan messages.Status, 1)
		j.status <- reply
		st := <-reply
		sent := f.sent()
		if st.LateAcks != 1 || len(sent) != 1 || sent[0].b.CheckpointID != 6 || sent[0].at.Sub(t0) != 8*s {
			t.Fatalf("late acks %d, barriers %+v", st.LateAcks, sent)
		}
	})
}

func TestRegistrationSyncDropsVanishedInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.at(s)
		// After a reconnect the watch re-reads every registration: b vanished meanwhile
		// and a came back as a new incarnation; c is new.
		h.j.mail.offerReg(Registration{Sync: true, All: map[string]string{"a": "inc-a2", "c": "inc-c"}})
		synctest.Wait()
		st := h.status()
		if !slices.Equal(st.Instances, []string{"a", "c"}) {
			t.Fatalf("instances after sync %v, want [a c]", st.Instances)
		}
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 1 || ab[0].CheckpointID != 1 || ab[0].Reason != messages.AbortInstanceLost {
			t.Fatalf("aborted %+v, want checkpoint 1 aborted: its instances left", ab)
		}
	})
}

// TestGhostRegistrationsResendTheBarrierBoundedly: 300 registered instances that never
// ack, each heartbeating every 1.5 s, make the pending barrier go out again at most 8
// times in 20 s (resendGap), not once per heartbeat.
func TestGhostRegistrationsResendTheBarrierBoundedly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ghosts := make([]string, 300)
		for i := range ghosts {
			ghosts[i] = fmt.Sprintf("ghost-%d", i)
		}
		h := newHarness(t, ghosts...)
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.at(s)
		h.wantBarriers(s)
		const beat = 1500 * time.Millisecond
		heartbeats := 0
		for at := s + beat/300; at < 21*s; at += beat / 300 { // the heartbeats spread evenly
			h.at(at)
			g := ghosts[heartbeats%len(ghosts)]
			h.j.mail.offerReg(Registration{Instance: g, Incarnation: "inc-" + g})
			heartbeats++
		}
		synctest.Wait()
		sent := h.barrierTimes()
		t.Logf("%d heartbeats in 20 s: barrier sent at %v", heartbeats, sent)
		if len(sent) < 2 || len(sent) > 1+8 {
			t.Fatalf("barrier sent %d times (%v) for %d heartbeats of instances that never ack, want 2 to 9", len(sent), sent, heartbeats)
		}
		for i := 2; i < len(sent); i++ {
			if gap, want := sent[i]-sent[i-1], resendGap(i-1); gap < want {
				t.Fatalf("resend %d came %s after the one before, want at least %s: %v", i, gap, want, sent)
			}
		}
		if st := h.status(); st.Pending[0].Resent != len(sent)-1 {
			t.Fatalf("status counts %d resends, want %d", st.Pending[0].Resent, len(sent)-1)
		}
	})
}

func TestHeartbeatOfAWaitedForInstanceResendsTheBarrier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.at(s)
		h.ack(1, "", "a")
		// b's heartbeat right after the trigger: too early to resend.
		h.j.mail.offerReg(Registration{Instance: "b", Incarnation: "inc-b"})
		synctest.Wait()
		h.wantBarriers(s)
		// b re-announces itself later (after a reconnect): it may have missed the barrier.
		h.at(2 * s)
		h.j.mail.offerReg(Registration{Instance: "b", Incarnation: "inc-b"})
		synctest.Wait()
		h.wantBarriers(s, 2*s)
		if sent := h.f.sent(); sent[1].b != sent[0].b {
			t.Fatalf("resent %+v, want the same barrier %+v", sent[1].b, sent[0].b)
		}
		// a acked already: its heartbeat resends nothing.
		h.j.mail.offerReg(Registration{Instance: "a", Incarnation: "inc-a"})
		synctest.Wait()
		h.wantBarriers(s, 2*s)
		if st := h.status(); st.Pending[0].Resent != 1 {
			t.Fatalf("resent %d, want 1", st.Pending[0].Resent)
		}
		h.ack(1, "", "b")
		if len(h.f.manifests) != 1 {
			t.Fatal("checkpoint did not complete after the resent barrier was acked")
		}
	})
}

// TestBarrierIDIsTakenAheadOfItsDueTime: the counter's round trip (30 ms here) comes
// before the barrier's due time, not between it and the barrier; an id taken under a
// tenure that ends unsent is never sent.
func TestBarrierIDIsTakenAheadOfItsDueTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeBackend{}
		var mu sync.Mutex
		var calls []time.Time
		f.slow = func(_ context.Context, op string) {
			if op == "nextID" {
				mu.Lock()
				calls = append(calls, time.Now())
				mu.Unlock()
				time.Sleep(30 * time.Millisecond)
			}
		}
		h := newHarnessWith(t, f, "a")
		defer h.stop()
		h.config(1, every(10*s))
		h.at(10 * s)
		h.wantBarriers(10 * s)
		mu.Lock()
		if len(calls) != 1 || calls[0].Sub(h.t0) != 10*s-prepareLead(10*s) {
			t.Fatalf("id taken at %v, want once at t0+%s", calls, 10*s-prepareLead(10*s))
		}
		mu.Unlock()
		h.ack(1, "", "a")

		// The id of the barrier due at 20 s is taken at 19.95 s; the lease is lost at
		// 19.99 s and taken again: that id is dropped, the next barrier carries a new one.
		h.at(20*s - 10*time.Millisecond)
		h.j.mail.offerLease(Lease{Held: false, Holder: "c2"})
		synctest.Wait()
		h.j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(1000 * time.Hour), Holder: "c1", Tenure: 2})
		synctest.Wait()
		h.at(31 * s)
		sent := h.f.sent()
		if len(sent) != 2 || sent[1].b.CheckpointID != 3 {
			t.Fatalf("barriers %+v, want a second one with id 3 (id 2 was taken under the lost tenure)", sent)
		}
	})
}

// TestBarrierSharesTheManifestSizeOutAsDeltaLimits: the barrier's MaxDeltas is how many
// delta references per member fit in the manifest's share of max_payload, counting the
// registered instances and the absent members of the newest manifest.
func TestBarrierSharesTheManifestSizeOutAsDeltaLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeBackend{latest: &messages.Manifest{CheckpointID: 3, Instances: map[string]messages.InstanceSnapshot{"absent-0": {}, "a": {}}}}
		j := newJob("demo", "c1", f, zerolog.Nop())
		j.manifestBytes = 512 << 10
		h := newHarnessOf(t, f, j, "a", "b")
		defer h.stop()
		h.config(1, every(10*s))
		h.at(10 * s)
		sent := f.sent()
		// Members a, b (registered) and absent-0 (in the newest manifest): per delta
		// 3 × (len("demo") + deltaRefBytes) + len("a") + len("b") + len("absent-0").
		per := 3*(len("demo")+deltaRefBytes) + 1 + 1 + 8
		if len(sent) != 1 || sent[0].b.MaxDeltas != (512<<10)/per {
			t.Fatalf("barriers %+v, want one with max deltas %d", sent, (512<<10)/per)
		}
	})
}

// TestManifestAtTheDeltaLimitFitsMaxPayload: members with the longest names, 20-digit
// checkpoint ids and chains as long as the barrier's limit allows give a manifest within
// the server's default max_payload (1 MiB), the manifest's share being half of it.
func TestManifestAtTheDeltaLimitFitsMaxPayload(t *testing.T) {
	const maxPayload = 1 << 20
	job := strings.Repeat("j", 64)
	for _, members := range []int{1, 4, 16, 100, 1000} {
		j := newJob(job, "c1", &fakeBackend{}, zerolog.Nop())
		j.manifestBytes = maxPayload / 2
		m := &messages.Manifest{Schema: messages.SchemaVersion, Job: job, CheckpointID: math.MaxUint64, Instances: map[string]messages.InstanceSnapshot{}}
		for i := range members {
			j.roster.instances[fmt.Sprintf("%064d", i)] = "inc"
		}
		limit := j.deltaBudget()
		for inst := range j.roster.instances {
			ref := func() messages.SnapshotRef {
				return messages.SnapshotRef{Object: cairnjs.ObjectName(job, math.MaxUint64, inst, "sim"), Size: math.MaxUint64, Digest: "SHA-256=" + strings.Repeat("A", 43) + "="}
			}
			is := messages.InstanceSnapshot{
				Incarnation: "oxHueRSEVl3qDnGuJYOYDV", Snapshot: ref(), Checkpoint: math.MaxUint64,
				Positions: map[string]uint64{cairnjs.InputStream: math.MaxUint64},
				Filters:   map[string][]string{cairnjs.InputStream: {"cairn.input." + job + "." + inst}},
			}
			for range limit - 1 { // a chain holds fewer deltas than the limit
				is.Deltas = append(is.Deltas, ref())
			}
			m.Instances[inst] = is
		}
		data, err := messages.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d members: limit %d deltas, manifest %d bytes", members, limit, len(data))
		if len(data) > maxPayload {
			t.Errorf("%d members at %d deltas each: manifest of %d bytes, over max_payload %d", members, limit-1, len(data), maxPayload)
		}
	}
}
