package loop

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestNoBarrierAfterTheLeaseEndsDuringIdAllocation: the id allocation is the blocking call
// between the schedule's check of the lease and the barrier. Whether the store is merely
// slow (the call returns after the validity ended) or hangs (the call's deadline is the
// validity), no barrier goes out once the lease's validity is over.
func TestNoBarrierAfterTheLeaseEndsDuringIdAllocation(t *testing.T) {
	tests := []struct {
		name string
		slow func(ctx context.Context)
	}{
		{"returns 1.5s late", func(context.Context) { time.Sleep(1500 * time.Millisecond) }},
		{"hangs until its deadline", func(ctx context.Context) { <-ctx.Done() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, "a")
				defer h.stop()
				h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = 10*s, time.Hour })
				h.j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(10500 * time.Millisecond), Holder: "c1", Rev: 7})
				var returned time.Duration
				h.f.mu.Lock()
				h.f.slow = func(ctx context.Context, op string) {
					if op == "nextID" {
						tt.slow(ctx)
						returned = time.Since(h.t0)
					}
				}
				h.f.mu.Unlock()
				h.at(20 * s)
				h.wantBarriers()
				if returned == 0 || returned > 11500*time.Millisecond {
					t.Fatalf("id allocation returned at t0+%s, want by t0+11.5s", returned)
				}
				if st := h.status(); st.Waiting == "" {
					t.Fatalf("the coordinator still acts after its lease ended: %+v", st)
				}
			})
		})
	}
}

// TestNoCompletionAfterTheLeaseEnds: every expected instance acked, but the lease's validity
// ends while the coordinator reads the predecessor manifest: no manifest is written, and
// the checkpoint is aborted as a coordinator change. Barriers carry the lease revision.
func TestNoCompletionAfterTheLeaseEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(time.Hour), Holder: "c1", Rev: 42})
		// A failed write leaves the coordinator without a known predecessor.
		h.f.mu.Lock()
		h.f.failWrite = errDisk
		h.f.mu.Unlock()
		h.at(s)
		h.ack(1, "", "a")
		h.f.mu.Lock()
		h.f.failWrite = nil
		h.f.slow = func(_ context.Context, op string) {
			if op == "latestManifest" {
				time.Sleep(1500 * time.Millisecond)
			}
		}
		h.f.mu.Unlock()
		h.j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(2500 * time.Millisecond), Holder: "c1", Rev: 43})
		h.at(2 * s)
		h.ack(2, "", "a")
		h.at(5 * s)
		if len(h.f.manifests) != 0 {
			t.Fatalf("manifests written after the lease ended: %+v", h.f.manifests)
		}
		if c := h.f.eventsOf(messages.Completed); len(c) != 0 {
			t.Fatalf("completed %+v after the lease ended", c)
		}
		ab := h.f.eventsOf(messages.Aborted)
		if len(ab) != 2 || ab[1].CheckpointID != 2 || ab[1].Reason != messages.AbortCoordinatorChange {
			t.Fatalf("aborted %+v, want checkpoint 2 aborted as a coordinator change", ab)
		}
		sent := h.f.sent()
		if len(sent) != 2 || sent[0].b.Token != 42 || sent[1].b.Token != 43 {
			t.Fatalf("barriers %+v, want tokens 42 and 43 (the lease revision at each trigger)", sent)
		}
	})
}

// TestANewTenureFencesTheOldOne: the keeper lost the lease and took it again before the
// loop looked at its mailbox; the loop sees only the newest state, held, but under a new
// Tenure: what was pending belongs to the old tenure and is aborted, and the loop takes
// the job over again.
func TestANewTenureFencesTheOldOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.at(s)
		h.j.mail.offerLease(Lease{Held: true, ValidUntil: h.t0.Add(time.Hour), Holder: "c1", Rev: 20, Tenure: 20})
		synctest.Wait()
		// Checkpoint 1 is aborted by the fence, and reported once more by the take-over
		// as left unfinished (the real backend's event ids make that a duplicate).
		for _, e := range h.f.eventsOf(messages.Aborted) {
			if e.CheckpointID != 1 || e.Reason != messages.AbortCoordinatorChange {
				t.Fatalf("aborted %+v, want only checkpoint 1 of the old tenure", e)
			}
		}
		if st := h.status(); len(st.Pending) != 0 || st.Aborted == 0 {
			t.Fatalf("status %+v: checkpoint 1 of the old tenure still pending", st)
		}
		h.ack(1, "", "a")
		if len(h.f.manifests) != 0 {
			t.Fatal("a checkpoint of the old tenure completed")
		}
		h.at(2 * s)
		if sent := h.f.sent(); len(sent) != 2 || sent[1].b.Token != 20 {
			t.Fatalf("barriers %+v, want the second under token 20", sent)
		}
	})
}
