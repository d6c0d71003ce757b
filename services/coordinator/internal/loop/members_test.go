package loop

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// removeResult is the outcome of a member removal.
type removeResult struct {
	out *messages.MemberRemoval
	err *Error
}

// remove asks the loop to remove a member; the result arrives on the channel once decided.
func (h *harness) remove(instance string) <-chan removeResult {
	ch := make(chan removeResult, 1)
	h.j.removes <- removeRequest{instance: instance, done: func(out *messages.MemberRemoval, err *Error) {
		ch <- removeResult{out, err}
	}}
	synctest.Wait()
	return ch
}

// leave deregisters an instance.
func (h *harness) leave(instance string) {
	h.j.mail.offerReg(Registration{Instance: instance})
	synctest.Wait()
}

// latest returns the newest manifest written.
func (h *harness) latest() *messages.Manifest {
	h.t.Helper()
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if len(h.f.manifests) == 0 {
		h.t.Fatal("no manifest written")
	}
	return h.f.manifests[len(h.f.manifests)-1]
}

func TestAbsentMemberIsCarriedForward(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Retain = s, 2 })
		h.at(s)
		h.ack(1, "", "a", "b")
		first := h.latest().Instances["b"]
		h.at(1500 * time.Millisecond)
		h.leave("b")
		left := time.Now().UTC()
		for id := uint64(2); id <= 8; id++ {
			h.at(time.Duration(id) * s)
			h.ack(id, "", "a")
			m := h.latest()
			if m.CheckpointID != id {
				t.Fatalf("checkpoint %d did not complete without the absent member; latest %d", id, m.CheckpointID)
			}
			got, ok := m.Instances["b"]
			if !ok {
				t.Fatalf("manifest %d dropped absent member b: %v", id, m.Instances)
			}
			want := first
			want.Checkpoint, want.AbsentSince = 1, left
			if got.Snapshot != want.Snapshot || got.Checkpoint != 1 || !got.AbsentSince.Equal(left) || got.Incarnation != want.Incarnation ||
				got.Positions["CAIRN_INPUT"] != 10 || !slices.Equal(got.Filters["CAIRN_INPUT"], want.Filters["CAIRN_INPUT"]) {
				t.Fatalf("manifest %d holds b as %+v, want %+v", id, got, want)
			}
			if a := m.Instances["a"]; a.Checkpoint != id || !a.AbsentSince.IsZero() || a.Positions["CAIRN_INPUT"] != 10*id {
				t.Fatalf("manifest %d holds a as %+v", id, a)
			}
		}
		st := h.status()
		if len(st.Members) != 2 {
			t.Fatalf("members %+v", st.Members)
		}
		a, b := st.Members[0], st.Members[1]
		if !a.Active || a.Checkpoint != 8 || a.AbsentSince != nil || a.Incarnation != "inc-a" {
			t.Fatalf("member a %+v", a)
		}
		if b.Active || b.Checkpoint != 1 || b.AbsentSince == nil || !b.AbsentSince.Equal(left) || b.Incarnation != "inc-b" || b.Positions["CAIRN_INPUT"] != 10 {
			t.Fatalf("member b %+v", b)
		}
	})
}

func TestCarryForwardWithoutKnownDepartureUsesThePredecessorsCompletion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		done := time.Now().Add(-time.Minute).UTC()
		f := &fakeBackend{last: 3, latest: &messages.Manifest{CheckpointID: 3, TriggeredAt: done, CompletedAt: done, Instances: map[string]messages.InstanceSnapshot{
			"gone": {Incarnation: "old", Snapshot: messages.SnapshotRef{Object: "demo/2/gone", Digest: "d"}, Checkpoint: 2},
			"away": {Incarnation: "old", Snapshot: messages.SnapshotRef{Object: "demo/1/away", Digest: "d"}, Checkpoint: 1, AbsentSince: done.Add(-time.Hour)},
		}}}
		h := newHarnessWith(t, f, "a")
		defer h.stop()
		h.config(1, every(s))
		h.at(s)
		h.ack(4, "", "a")
		m := h.latest()
		if g := m.Instances["gone"]; g.Checkpoint != 2 || !g.AbsentSince.Equal(done) {
			t.Fatalf("gone carried as %+v, want state of 2 absent since the predecessor's completion %v", g, done)
		}
		if w := m.Instances["away"]; w.Checkpoint != 1 || !w.AbsentSince.Equal(done.Add(-time.Hour)) {
			t.Fatalf("away carried as %+v, want its absent_since kept", w)
		}
	})
}

func TestAckCountsWhenTheInstanceLeavesAfterAcking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, time.Hour })
		h.at(s)
		h.ack(1, "", "b")
		h.leave("b")
		if ab := h.f.eventsOf(messages.Aborted); len(ab) != 0 {
			t.Fatalf("checkpoint aborted although b had acked before leaving: %+v", ab)
		}
		h.ack(1, "", "a")
		m := h.latest()
		if b := m.Instances["b"]; m.CheckpointID != 1 || b.Checkpoint != 1 || b.Snapshot.Object != "demo/1/b" || !b.AbsentSince.IsZero() {
			t.Fatalf("manifest %d holds b as %+v, want its ack for 1", m.CheckpointID, b)
		}
		// An instance that leaves before acking still aborts at once.
		h.at(2 * s)
		h.leave("a")
		if ab := h.f.eventsOf(messages.Aborted); len(ab) != 1 || ab[0].CheckpointID != 2 || ab[0].Reason != messages.AbortInstanceLost {
			t.Fatalf("aborted %+v, want 2 lost", ab)
		}
	})
}

func TestRemovingAMember(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = 10*s, time.Hour })
		h.at(10 * s)
		h.ack(1, "", "a", "b")
		for _, tt := range []struct {
			instance string
			kind     ErrorKind
			msg      string
		}{
			{"b", Conflict, "instance b of job demo is registered (active): stop it first"},
			{"zz", NotFound, "instance zz is not a member of job demo; members: a, b"},
		} {
			r := <-h.remove(tt.instance)
			if r.err == nil || r.err.Kind != tt.kind || !strings.Contains(r.err.Msg, tt.msg) {
				t.Fatalf("remove %s: %+v, want %v %q", tt.instance, r.err, tt.kind, tt.msg)
			}
		}
		h.at(11 * s)
		h.leave("b")
		// The removal triggers a checkpoint at once; its abort changes nothing.
		h.at(12 * s)
		res := h.remove("b")
		h.wantBarriers(10*s, 12*s)
		h.ack(2, "disk full", "a")
		r := <-res
		if r.err == nil || r.err.Kind != Unavailable || !strings.Contains(r.err.Msg, "checkpoint 2, which was to remove the member, aborted") {
			t.Fatalf("remove b while its checkpoint aborts: %+v", r.err)
		}
		if st := h.status(); len(st.Members) != 2 {
			t.Fatalf("b no longer a member after a failed removal: %+v", st.Members)
		}
		h.at(13 * s)
		res = h.remove("b")
		h.wantBarriers(10*s, 12*s, 13*s)
		if len(res) != 0 {
			t.Fatal("removal answered before a manifest without the member was written")
		}
		h.ack(3, "", "a")
		r = <-res
		if r.err != nil || r.out.Checkpoint != 3 || r.out.Instance != "b" || r.out.Dropped.Checkpoint != 1 || r.out.Dropped.Positions["CAIRN_INPUT"] != 10 {
			t.Fatalf("removal reply %+v %+v", r.out, r.err)
		}
		if _, ok := h.latest().Instances["b"]; ok {
			t.Fatalf("manifest 3 still holds b")
		}
		h.f.mu.Lock()
		evs := slices.Clone(h.f.memberEvents)
		h.f.mu.Unlock()
		if len(evs) != 1 || evs[0].Kind != messages.MemberRemoved || evs[0].Instance != "b" || evs[0].Checkpoint != 3 || evs[0].By != "c1" || evs[0].Incarnation != "inc-b" {
			t.Fatalf("member events %+v", evs)
		}
		if st := h.status(); len(st.Members) != 1 || st.Members[0].Instance != "a" {
			t.Fatalf("members after removal %+v", st.Members)
		}
		// Back again, it is a new member: not in the latest manifest, so not carried.
		h.j.mail.offerReg(Registration{Instance: "b", Incarnation: "inc-b"})
		synctest.Wait()
		if st := h.status(); len(st.Members) != 2 || st.Members[1].Checkpoint != 0 || !st.Members[1].Active {
			t.Fatalf("members after b came back %+v", st.Members)
		}
	})
}

func TestRemovalWithNoRegisteredInstanceCompletesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a", "b")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval = 10 * s })
		h.at(10 * s)
		h.ack(1, "", "a", "b")
		h.leave("a")
		h.leave("b")
		h.at(11 * s)
		r := <-h.remove("a")
		if r.err != nil || r.out.Checkpoint != 2 {
			t.Fatalf("removal %+v %+v", r.out, r.err)
		}
		m := h.latest()
		if _, ok := m.Instances["a"]; ok || m.CheckpointID != 2 {
			t.Fatalf("manifest %d holds %v", m.CheckpointID, m.Instances)
		}
		if b := m.Instances["b"]; b.Checkpoint != 1 || b.Snapshot.Object != "demo/1/b" {
			t.Fatalf("b carried as %+v", b)
		}
		h.at(30 * s)
		h.wantBarriers(10*s, 11*s)
	})
}

func TestNoManifestWithoutItsPredecessor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prev := &messages.Manifest{CheckpointID: 1, CompletedAt: time.Now(), Instances: map[string]messages.InstanceSnapshot{
			"old": {Incarnation: "x", Snapshot: messages.SnapshotRef{Object: "demo/1/old", Digest: "d"}},
		}}
		f := &fakeBackend{last: 1, latest: prev, failRead: errDisk}
		h := newHarnessWith(t, f, "a")
		defer h.stop()
		h.config(1, every(s))
		// Still unreadable at completion: abort, write nothing.
		h.at(s)
		h.ack(2, "", "a")
		if ab := h.f.eventsOf(messages.Aborted); len(ab) != 1 || ab[0].Reason != messages.AbortStorage || !strings.Contains(ab[0].Detail, "cannot read the latest manifest") {
			t.Fatalf("aborted %+v", ab)
		}
		if len(h.f.manifests) != 0 {
			t.Fatal("manifest written without knowing its predecessor")
		}
		// Readable again: the manifest carries the predecessor's member.
		h.f.mu.Lock()
		h.f.failRead = nil
		h.f.mu.Unlock()
		h.at(2 * s)
		h.ack(3, "", "a")
		if o := h.latest().Instances["old"]; o.Checkpoint != 1 || o.Snapshot.Object != "demo/1/old" {
			t.Fatalf("old carried as %+v", o)
		}
	})
}
