package coordinator

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestRetentionPass(t *testing.T) {
	srv := natstest.Start(t)
	_, _, res := srv.Resources(t, cjs.Options{})
	ctx := context.Background()
	b := &natsBackend{job: "r", manifests: res.Manifests, log: zerolog.Nop()}
	put := func(name string) messages.SnapshotRef {
		info, err := res.Snapshots.PutBytes(ctx, name, []byte(name))
		if err != nil {
			t.Fatal(err)
		}
		return messages.SnapshotRef{Object: name, Size: info.Size, Digest: info.Digest}
	}
	manifest := func(id uint64, refs ...messages.SnapshotRef) {
		m := &messages.Manifest{Schema: messages.SchemaVersion, Job: "r", CheckpointID: id, CompletedAt: time.Now(), Instances: map[string]messages.InstanceSnapshot{}}
		for i, ref := range refs {
			m.Instances[string(rune('a'+i))] = messages.InstanceSnapshot{Incarnation: "x", Snapshot: ref}
		}
		data, err := messages.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Manifests.Put(ctx, cjs.ManifestKey("r", id), data); err != nil {
			t.Fatal(err)
		}
	}
	shared := put("r/1/a")    // unchanged snapshot, referenced by every manifest
	old := put("r/2/b")       // only in manifest 2, which retention drops
	aborted := put("r/3/b")   // acked for aborted checkpoint 3
	orphan := put("r/4/b")    // uploaded, never acked: only a full scan finds it
	inFlight := put("r/9/b")  // newer than the newest manifest: may still be acked
	other := put("other/1/a") // another job's
	live := put("r/5/b")      // acked for a pending checkpoint
	manifest(2, shared, old)
	manifest(6, shared, put("r/6/b"))
	manifest(7, shared, put("r/7/b"))

	r := &retainer{b: b, store: res.Snapshots, candidates: map[string]bool{}, passes: 1} // not a full scan
	if _, _, _, err := r.pass(ctx, retainRequest{keep: 2, live: []messages.SnapshotRef{live}, dropped: []messages.SnapshotRef{aborted, live}}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, res.Snapshots); !slices.Equal(got, []string{"other/1/a", "r/1/a", "r/4/b", "r/5/b", "r/6/b", "r/7/b", "r/9/b"}) {
		t.Fatalf("after a targeted pass: %v", got)
	}
	if _, err := res.Manifests.Get(ctx, cjs.ManifestKey("r", 2)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("manifest 2 beyond retain 2 kept: %v", err)
	}
	r.passes = 0 // a full scan
	if _, _, _, err := r.pass(ctx, retainRequest{keep: 2}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, res.Snapshots); !slices.Equal(got, []string{"other/1/a", "r/1/a", "r/6/b", "r/7/b", "r/9/b"}) {
		t.Fatalf("after a full scan: %v (orphan %s and unreferenced %s should go; %s, %s, %s stay)", got, orphan.Object, live.Object, inFlight.Object, other.Object, shared.Object)
	}
}

func names(t *testing.T, store jetstream.ObjectStore) []string {
	t.Helper()
	infos, err := store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	slices.Sort(out)
	return out
}

// TestRetentionKeepsChains checks that every segment of a retained manifest's chain stays
// (its base and each delta, even one referenced only as a delta and older than every
// retained checkpoint), and that the segments of the chains no retained manifest needs
// any more go, on targeted passes and on a full scan.
func TestRetentionKeepsChains(t *testing.T) {
	srv := natstest.Start(t)
	_, _, res := srv.Resources(t, cjs.Options{})
	ctx := context.Background()
	b := &natsBackend{job: "c", manifests: res.Manifests, log: zerolog.Nop()}
	put := func(name string) messages.SnapshotRef {
		info, err := res.Snapshots.PutBytes(ctx, name, []byte(name))
		if err != nil {
			t.Fatal(err)
		}
		return messages.SnapshotRef{Object: name, Size: info.Size, Digest: info.Digest}
	}
	manifest := func(id uint64, base messages.SnapshotRef, deltas ...messages.SnapshotRef) {
		m := &messages.Manifest{Schema: messages.SchemaVersion, Job: "c", CheckpointID: id, CompletedAt: time.Now(),
			Instances: map[string]messages.InstanceSnapshot{"a": {Incarnation: "x", Snapshot: base, Deltas: deltas}}}
		data, err := messages.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Manifests.Put(ctx, cjs.ManifestKey("c", id), data); err != nil {
			t.Fatal(err)
		}
	}
	oldBase, d2, d3 := put("c/1/a.base"), put("c/2/a"), put("c/3/a")
	newBase, d5, d6 := put("c/4/a.base"), put("c/5/a"), put("c/6/a")
	manifest(2, oldBase, d2)
	manifest(3, oldBase, d2, d3)
	manifest(4, newBase)
	manifest(5, newBase, d5)
	manifest(6, newBase, d5, d6)
	r := &retainer{b: b, store: res.Snapshots, candidates: map[string]bool{}, passes: 1}
	if _, _, _, err := r.pass(ctx, retainRequest{keep: 4}); err != nil {
		t.Fatal(err)
	}
	// Manifest 3 is retained: the old base and both its deltas stay, although d2 belongs
	// to checkpoint 2, whose manifest is gone.
	if got := names(t, res.Snapshots); !slices.Equal(got, []string{"c/1/a.base", "c/2/a", "c/3/a", "c/4/a.base", "c/5/a", "c/6/a"}) {
		t.Fatalf("retaining manifests 3-6: %v", got)
	}
	r.passes = 0 // a full scan
	if _, _, _, err := r.pass(ctx, retainRequest{keep: 3}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, res.Snapshots); !slices.Equal(got, []string{"c/4/a.base", "c/5/a", "c/6/a"}) {
		t.Fatalf("retaining manifests 4-6: %v (the old chain %s %s %s should go)", got, oldBase.Object, d2.Object, d3.Object)
	}
}
