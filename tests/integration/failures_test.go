package integration

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestToleratedFailuresMarkTheJobFailedUntilASuccess(t *testing.T) {
	s := startSystem(t, "tf", "f-0")
	s.waitRegistered("tf", 1)
	s.register("tf", "silent")
	s.waitRegistered("tf", 2)
	evs := s.events("tf")
	v := s.set("tf", `{"interval":"100ms","timeout":"1s","tolerable_failures":2}`)
	var aborts []*messages.CheckpointEvent
	for len(aborts) < 3 {
		e := next(t, evs, 10*time.Second, "checkpoint event")
		if e.ConfigVersion != v.Version {
			continue
		}
		if e.Outcome != messages.Aborted || e.Reason != messages.AbortTimeout {
			t.Fatalf("unexpected event %+v", e)
		}
		aborts = append(aborts, e)
	}
	if aborts[0].Failed || aborts[1].Failed || !aborts[2].Failed {
		t.Fatalf("failed flags %v %v %v, want false false true", aborts[0].Failed, aborts[1].Failed, aborts[2].Failed)
	}
	if st := s.status("tf"); !st.Failed || st.ConsecutiveFailures < 3 || st.LastAborted == nil || st.LastAborted.Reason != "timeout" {
		t.Fatalf("status after 3 timeouts: %+v", st)
	}
	s.deregister("tf", "silent")
	nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool { return e.Outcome == messages.Completed })
	if st := s.status("tf"); st.Failed || st.ConsecutiveFailures != 0 {
		t.Fatalf("status after a success: failed=%v failures=%d", st.Failed, st.ConsecutiveFailures)
	}
}

func TestInstanceLostMidCheckpointAbortsAtOnce(t *testing.T) {
	s := startSystem(t, "lost", "l-0")
	s.waitRegistered("lost", 1)
	s.register("lost", "doomed")
	s.waitRegistered("lost", 2)
	evs := s.events("lost")
	bs := s.barriers("lost")
	s.set("lost", `{"interval":"100ms","timeout":"1m"}`)
	b := next(t, bs, 10*time.Second, "barrier")
	// The instance dies without a word: its registration stops being renewed and
	// expires with the bucket's TTL; the checkpoint must not wait for its 1m timeout.
	s.stop("fake:doomed")
	e := nextMatching(t, evs, 10*time.Second, "aborted checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.CheckpointID == b.b.CheckpointID
	})
	if e.Outcome != messages.Aborted || e.Reason != messages.AbortInstanceLost {
		t.Fatalf("checkpoint %d ended %s/%s %q, want aborted instance_lost", e.CheckpointID, e.Outcome, e.Reason, e.Detail)
	}
	if d := e.FinishedAt.Sub(e.TriggeredAt); d > 3*leaseTTL {
		t.Fatalf("aborted %s after the trigger; the registration TTL is %s", d, leaseTTL)
	}
	nextMatching(t, evs, 10*time.Second, "completed checkpoint without the lost instance", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed
	})
}

func TestRetentionKeepsSnapshotsSharedByRetainedManifests(t *testing.T) {
	s := startSystem(t, "ret", "s-0")
	s.waitRegistered("ret", 1)
	s.publish("ret", "s-0", 0, 40)
	s.waitApplied("ret", "s-0", 40)
	evs := s.events("ret")
	v := s.set("ret", `{"interval":"100ms","retain":2}`)
	// The instance applied all its input before the first checkpoint: every later
	// checkpoint references the same, unchanged snapshot object instead of uploading it
	// again.
	var done []*messages.CheckpointEvent
	for len(done) < 8 {
		e := next(t, evs, 10*time.Second, "checkpoint event")
		if e.ConfigVersion == v.Version && e.Outcome == messages.Completed {
			done = append(done, e)
		}
	}
	if done[0].Written == 0 || done[len(done)-1].Written != 0 || done[len(done)-1].Bytes != done[0].Bytes {
		t.Fatalf("bytes written: first %d, last %d (of %d referenced); unchanged snapshots must not be written again",
			done[0].Written, done[len(done)-1].Written, done[len(done)-1].Bytes)
	}
	ctx := context.Background()
	var objects map[string]bool
	natstest.Eventually(t, 10*time.Second, "retention settles to the retained manifests' objects", func() bool {
		objects = map[string]bool{}
		for name := range s.liveObjects("ret") {
			objects[name] = true
		}
		return len(objects) <= 2
	})
	referenced := 0
	for _, e := range done[len(done)-2:] {
		entry, err := s.res.Manifests.Get(ctx, cairnjs.ManifestKey("ret", e.CheckpointID))
		if err != nil {
			continue // retention moved past it meanwhile
		}
		var m messages.Manifest
		if err := messages.Unmarshal(entry.Value(), &m); err != nil {
			t.Fatal(err)
		}
		ref := m.Instances["s-0"].Snapshot
		if !objects[ref.Object] {
			t.Fatalf("manifest %d references %s, which retention deleted (objects: %v)", m.CheckpointID, ref.Object, objects)
		}
		if _, err := s.snapshots("ret").GetInfo(ctx, ref.Object); err != nil {
			t.Fatalf("object %s of retained manifest %d: %v", ref.Object, m.CheckpointID, err)
		}
		referenced++
	}
	if referenced == 0 {
		t.Fatal("no retained manifest to check")
	}
}

func TestCorruptNewestSnapshotFallsBackToThePreviousCheckpoint(t *testing.T) {
	s := startSystem(t, "cor", "c-0")
	s.waitRegistered("cor", 1)
	evs := s.events("cor")
	want := s.publish("cor", "c-0", 0, 60)
	v := s.set("cor", `{"interval":"150ms","retain":3}`)
	first := nextMatching(t, evs, 10*time.Second, "first checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	ctx := context.Background()
	entry, err := s.res.Manifests.Get(ctx, cairnjs.ManifestKey("cor", first.CheckpointID))
	if err != nil {
		t.Fatal(err)
	}
	var firstManifest messages.Manifest
	if err := messages.Unmarshal(entry.Value(), &firstManifest); err != nil {
		t.Fatal(err)
	}
	covered := firstManifest.Instances["c-0"].Positions[cairnjs.InputStream]
	if covered == 0 {
		t.Fatal("first checkpoint covers no input")
	}
	want = add(want, s.publish("cor", "c-0", 60, 40))
	s.waitApplied("cor", "c-0", 100)
	applied := time.Now()
	newest := nextMatching(t, evs, 10*time.Second, "checkpoint holding the new input", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.CheckpointID > first.CheckpointID && e.TriggeredAt.After(applied)
	})
	s.stop("c-0")
	// Input the checkpoints cover is gone, as with a retention limit on the input stream:
	// only a restore from a snapshot, not a replay from the start, can end exact.
	if err := s.res.Input.Purge(ctx, jetstream.WithPurgeSequence(covered+1)); err != nil {
		t.Fatal(err)
	}
	entry, err = s.res.Manifests.Get(ctx, cairnjs.LatestKey("cor"))
	if err != nil {
		t.Fatal(err)
	}
	var m messages.Manifest
	if err := messages.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatal(err)
	}
	if m.CheckpointID < newest.CheckpointID {
		t.Fatalf("latest manifest %d older than completed %d", m.CheckpointID, newest.CheckpointID)
	}
	// Overwrite the newest snapshot with garbage: same name, wrong digest. The reference
	// operator's state is a chain (keyed state store): its newest segment is the last.
	refs := m.Instances["c-0"].Refs()
	if _, err := s.snapshots("cor").PutBytes(ctx, refs[len(refs)-1].Object, []byte("not a snapshot")); err != nil {
		t.Fatal(err)
	}
	want = add(want, s.publish("cor", "c-0", 100, 25))
	s.startOperator("cor", "c-0")
	s.wantExact("cor", "c-0", want)
}
