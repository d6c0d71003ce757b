package coordinator

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestManifestWriteIsFencedByAManifestItDidNotKnow(t *testing.T) {
	srv := natstest.Start(t)
	nc, _, res := srv.Resources(t, cjs.Options{})
	ctx := context.Background()
	mine := &natsBackend{job: "w", manifests: res.Manifests, leader: nc, log: zerolog.Nop()}
	other := &natsBackend{job: "w", manifests: res.Manifests, leader: nc, log: zerolog.Nop()}
	manifest := func(id uint64) *messages.Manifest {
		return &messages.Manifest{Schema: messages.SchemaVersion, Job: "w", CheckpointID: id, Instances: map[string]messages.InstanceSnapshot{}}
	}
	if prev, err := mine.latestManifest(ctx); err != nil || prev != nil {
		t.Fatalf("latest of an empty job: %v %v", prev, err)
	}
	if _, err := other.latestManifest(ctx); err != nil {
		t.Fatal(err)
	}
	// Another coordinator writes manifest 1; this one, still believing there is none,
	// must not overwrite it with a manifest that lacks its members.
	if err := other.writeManifest(ctx, manifest(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := mine.writeManifest(ctx, manifest(2), 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("write over an unknown predecessor: %v, want ErrFenced", err)
	}
	// Knowing the predecessor, the write goes through.
	if prev, err := mine.latestManifest(ctx); err != nil || prev.CheckpointID != 1 {
		t.Fatalf("latest: %v %v", prev, err)
	}
	if err := mine.writeManifest(ctx, manifest(3), 1); err != nil {
		t.Fatalf("write after its predecessor: %v", err)
	}
}
