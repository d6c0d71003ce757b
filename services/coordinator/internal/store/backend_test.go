package store

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

func TestManifestWriteIsFencedByAManifestItDidNotKnow(t *testing.T) {
	srv := natstest.Start(t)
	nc, _, res := srv.Resources(t, cairnjs.Options{})
	ctx := context.Background()
	mine := &Backend{job: "w", manifests: res.Manifests, events: res.Checkpoints, leader: nc, log: zerolog.Nop()}
	other := &Backend{job: "w", manifests: res.Manifests, events: res.Checkpoints, leader: nc, log: zerolog.Nop()}
	manifest := func(id uint64) *messages.Manifest {
		return &messages.Manifest{Schema: messages.SchemaVersion, Job: "w", CheckpointID: id, Instances: map[string]messages.InstanceSnapshot{}}
	}
	if prev, err := mine.LatestManifest(ctx); err != nil || prev != nil {
		t.Fatalf("latest of an empty job: %v %v", prev, err)
	}
	if _, err := other.LatestManifest(ctx); err != nil {
		t.Fatal(err)
	}
	// Another coordinator writes manifest 1; this one, still believing there is none,
	// must not overwrite it with a manifest that lacks its members.
	if err := other.WriteManifest(ctx, manifest(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := mine.WriteManifest(ctx, manifest(2), 0); !errors.Is(err, loop.ErrFenced) {
		t.Fatalf("write over an unknown predecessor: %v, want loop.ErrFenced", err)
	}
	// Knowing the predecessor, the write goes through.
	if prev, err := mine.LatestManifest(ctx); err != nil || prev.CheckpointID != 1 {
		t.Fatalf("latest: %v %v", prev, err)
	}
	if err := mine.WriteManifest(ctx, manifest(3), 1); err != nil {
		t.Fatalf("write after its predecessor: %v", err)
	}
}

// TestLostManifestsAreTold: a job whose checkpoints completed (a completed event is on
// record) but whose <job>.latest is gone reads as loop.ErrManifestsLost, not as a new job, and a
// write that expected a predecessor finds it lost rather than fenced.
func TestLostManifestsAreTold(t *testing.T) {
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, cairnjs.Options{})
	ctx := context.Background()
	b := &Backend{job: "l", subjects: cairnjs.Subjects{}, js: js, manifests: res.Manifests, events: res.Checkpoints, leader: nc, log: zerolog.Nop()}
	m := &messages.Manifest{Schema: messages.SchemaVersion, Job: "l", CheckpointID: 1, Instances: map[string]messages.InstanceSnapshot{}}
	if err := b.WriteManifest(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvent(ctx, &messages.CheckpointEvent{Schema: messages.SchemaVersion, Job: "l", CheckpointID: 1, Outcome: messages.Aborted, Reason: messages.AbortTimeout}); err != nil {
		t.Fatal(err)
	}
	if err := res.Manifests.Delete(ctx, cairnjs.LatestKey("l")); err != nil {
		t.Fatal(err)
	}
	// Only an aborted event: nothing completed that a manifest would hold.
	if got, err := b.LatestManifest(ctx); err != nil || got != nil {
		t.Fatalf("latest with only an aborted event: %v, %v; want none", got, err)
	}
	data, err := messages.Marshal(&messages.CheckpointEvent{Schema: messages.SchemaVersion, Job: "l", CheckpointID: 1, Outcome: messages.Completed})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, b.subjects.CheckpointEvent("l", "completed"), data); err != nil {
		t.Fatal(err)
	}
	if _, err := b.LatestManifest(ctx); !errors.Is(err, loop.ErrManifestsLost) {
		t.Fatalf("latest after a completed checkpoint, with <job>.latest gone: %v, want loop.ErrManifestsLost", err)
	}
	next := &messages.Manifest{Schema: messages.SchemaVersion, Job: "l", CheckpointID: 2, Instances: map[string]messages.InstanceSnapshot{}}
	b.latestOK = false
	if err := b.WriteManifest(ctx, next, 1); !errors.Is(err, loop.ErrManifestsLost) {
		t.Fatalf("write after predecessor 1 with <job>.latest gone: %v, want loop.ErrManifestsLost", err)
	}
}

// TestMembershipIsRecordedAndCleared: the coordinator's marks in CAIRN_INSTANCES keep
// what the operator wrote (its incarnation) and set the membership once; a removal clears
// it.
func TestMembershipIsRecordedAndCleared(t *testing.T) {
	srv := natstest.Start(t)
	nc, _, res := srv.Resources(t, cairnjs.Options{})
	ctx := context.Background()
	b := &Backend{job: "r", instances: res.Instances, leader: nc, log: zerolog.Nop()}
	read := func() messages.InstanceRecord {
		t.Helper()
		e, err := res.Instances.Get(ctx, cairnjs.InstanceKey("r", "i"))
		if err != nil {
			t.Fatal(err)
		}
		var rec messages.InstanceRecord
		if err := messages.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// No record yet (an operator older than records): one is written.
	if err := b.MarkMember(ctx, "i", "inc-1", 4); err != nil {
		t.Fatal(err)
	}
	if rec := read(); rec.Member != 4 || rec.Incarnation != "inc-1" {
		t.Fatalf("record %+v, want member 4 of incarnation inc-1", rec)
	}
	if err := b.MarkMember(ctx, "i", "inc-2", 9); err != nil {
		t.Fatal(err)
	}
	if rec := read(); rec.Member != 4 || rec.Incarnation != "inc-1" {
		t.Fatalf("second mark changed the record: %+v", rec)
	}
	if err := b.ClearMember(ctx, "i"); err != nil {
		t.Fatal(err)
	}
	if rec := read(); rec.Member != 0 || rec.Incarnation != "inc-1" {
		t.Fatalf("after the removal: %+v, want no membership", rec)
	}
}
