package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

func TestRetentionPass(t *testing.T) {
	js, res, r := partialRetainer(t, "r")
	ctx := context.Background()
	obs := jobStore(t, js, "r")
	put := func(name string) messages.SnapshotRef { return putSnapshot(t, obs, name) }
	manifest := func(id uint64, refs ...messages.SnapshotRef) {
		putManifest(t, res, cairnjs.ManifestKey("r", id), testManifest("r", id, refs...))
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

	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 2, Live: []messages.SnapshotRef{live}, Dropped: []messages.SnapshotRef{aborted, live}}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"other/1/a", "r/1/a", "r/4/b", "r/5/b", "r/6/b", "r/7/b", "r/9/b"}) {
		t.Fatalf("after a targeted pass: %v", got)
	}
	if _, err := res.Manifests.Get(ctx, cairnjs.ManifestKey("r", 2)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("manifest 2 beyond retain 2 kept: %v", err)
	}
	r.passes = 0 // a full scan
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 2}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"other/1/a", "r/1/a", "r/6/b", "r/7/b", "r/9/b"}) {
		t.Fatalf("after a full scan: %v (orphan %s and unreferenced %s should go; %s, %s, %s stay)", got, orphan.Object, live.Object, inFlight.Object, other.Object, shared.Object)
	}
	// Nothing is left of the deleted objects: one chunk and one meta message per object.
	if n := streamMsgs(t, js, cairnjs.ObjectStream(cairnjs.SnapshotStore("r"))); n != 2*5 {
		t.Fatalf("%s holds %d messages for 5 one-chunk objects: markers of deleted objects left", cairnjs.ObjectStream(cairnjs.SnapshotStore("r")), n)
	}
}

// TestRetentionListsWhenAsked checks that a pass relies on the manifests handed over
// between listings, and lists the job's keys when asked: a savepoint written since the
// last listing keeps its objects.
func TestRetentionListsWhenAsked(t *testing.T) {
	js, res, r := partialRetainer(t, "l")
	ctx := context.Background()
	obs := jobStore(t, js, "l")
	a1, a2, a3 := putSnapshot(t, obs, "l/1/a"), putSnapshot(t, obs, "l/2/a"), putSnapshot(t, obs, "l/3/a")
	m1 := testManifest("l", 1, a1)
	putManifest(t, res, cairnjs.ManifestKey("l", 1), m1)
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1}); err != nil { // the first pass lists
		t.Fatal(err)
	}
	// Manifest 2 is handed over, not listed: manifest 1 goes. Manifest 2 is also a
	// savepoint, written after the listing.
	m2 := testManifest("l", 2, a2)
	putManifest(t, res, cairnjs.ManifestKey("l", 2), m2)
	putManifest(t, res, cairnjs.SavepointKey("l", "keep"), m2)
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1, Written: []*messages.Manifest{m2}, List: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Manifests.Get(ctx, cairnjs.ManifestKey("l", 1)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("manifest 1 beyond retain 1 kept: %v", err)
	}
	m3 := testManifest("l", 3, a3)
	putManifest(t, res, cairnjs.ManifestKey("l", 3), m3)
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1, Written: []*messages.Manifest{m3}}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"l/2/a", "l/3/a"}) {
		t.Fatalf("after manifest 2 was retained out: %v (%s of savepoint keep must stay)", got, a2.Object)
	}
}

// TestRetentionRefusesAListingBehindTheLeader: a listing of the job's keys that lacks the
// manifest <job>.latest names fails the pass before anything is deleted; once it holds
// it, the pass goes on. The leader holds manifests 1, 2 and 3 (3, this coordinator's own,
// is handed over), and the listing, as a replica that lags answers it, only manifest 1:
// without the check the pass would keep 3 and 1 and free the object only 2 references.
func TestRetentionRefusesAListingBehindTheLeader(t *testing.T) {
	js, res, r := partialRetainer(t, "s")
	ctx := context.Background()
	obs := jobStore(t, js, "s")
	a1, a2, a3 := putSnapshot(t, obs, "s/1/a"), putSnapshot(t, obs, "s/2/a"), putSnapshot(t, obs, "s/3/a")
	m1, m2, m3 := testManifest("s", 1, a1), testManifest("s", 2, a2), testManifest("s", 3, a3)
	putManifest(t, res, cairnjs.ManifestKey("s", 1), m1)
	putManifest(t, res, cairnjs.LatestKey("s"), m3)
	_, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 2, Scan: true, Written: []*messages.Manifest{m3}})
	if !errors.Is(err, errStaleListing) {
		t.Fatalf("pass over a listing without the newest manifest: %v, want errStaleListing", err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"s/1/a", "s/2/a", "s/3/a"}) {
		t.Fatalf("after the refused pass: %v, want nothing deleted", got)
	}
	if _, err := res.Manifests.Get(ctx, cairnjs.ManifestKey("s", 1)); err != nil {
		t.Fatalf("manifest 1 after the refused pass: %v", err)
	}
	// The listing catches up.
	putManifest(t, res, cairnjs.ManifestKey("s", 2), m2)
	putManifest(t, res, cairnjs.ManifestKey("s", 3), m3)
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 2, Scan: true}); err != nil {
		t.Fatalf("pass over a current listing: %v", err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"s/2/a", "s/3/a"}) {
		t.Fatalf("after the pass: %v, want only manifest 1's object gone", got)
	}
}

// putSnapshot stores an object name in obs (its content is its name) and returns its
// reference: in the store shared before stores were per job (an empty Store) when obs is
// that store.
func putSnapshot(t *testing.T, obs jetstream.ObjectStore, name string) messages.SnapshotRef {
	t.Helper()
	info, err := obs.PutBytes(context.Background(), name, []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	ref := messages.SnapshotRef{Store: info.Bucket, Object: name, Size: info.Size, Digest: info.Digest}
	if ref.Store == cairnjs.SnapshotBucket {
		ref.Store = ""
	}
	return ref
}

// jobStore creates job's snapshot store.
func jobStore(t *testing.T, js jetstream.JetStream, job string) jetstream.ObjectStore {
	t.Helper()
	obs, err := cairnjs.EnsureSnapshotStore(context.Background(), js, cairnjs.Options{}, job)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

// testManifest returns manifest id of job with one member per ref (a, b, …).
func testManifest(job string, id uint64, refs ...messages.SnapshotRef) *messages.Manifest {
	m := &messages.Manifest{Schema: messages.SchemaVersion, Job: job, CheckpointID: id, CompletedAt: time.Now(), Instances: map[string]messages.InstanceSnapshot{}}
	for i, ref := range refs {
		m.Instances[string(rune('a'+i))] = messages.InstanceSnapshot{Incarnation: "x", Snapshot: ref}
	}
	return m
}

// putManifest stores m under key of the manifest bucket.
func putManifest(t *testing.T, res *cairnjs.Resources, key string, m *messages.Manifest) {
	t.Helper()
	data, err := messages.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Manifests.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

// newTestRetainer returns a retention worker's state for job on res.
// partialRetainer starts a server and returns a retainer for job whose next pass is not
// a full scan.
func partialRetainer(t *testing.T, job string) (jetstream.JetStream, *cairnjs.Resources, *retainer) {
	t.Helper()
	_, js, res := natstest.Start(t).Resources(t, cairnjs.Options{})
	r := newTestRetainer(js, res, job)
	r.passes = 1
	return js, res, r
}

func newTestRetainer(js jetstream.JetStream, res *cairnjs.Resources, job string) *retainer {
	b := &Backend{job: job, manifests: res.Manifests, events: res.Checkpoints, leader: js.Conn(), log: zerolog.Nop()}
	lookup := func(ctx context.Context, name string) (StreamPurger, error) { return js.Stream(ctx, name) }
	return newRetainer(b, &JobStores{job: job, js: js, nc: js.Conn(), stream: lookup}, nil)
}

// streamMsgs returns how many messages the stream holds.
func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestRetentionLeavesNoMarkers checks that purged manifests leave markers that expire
// after the bucket's LimitMarkerTTL, and that a full scan removes the delete markers an
// object store Delete left behind (deployments from before retention purged objects).
func TestRetentionLeavesNoMarkers(t *testing.T) {
	srv := natstest.Start(t)
	_, js, res := srv.Resources(t, cairnjs.Options{MarkerTTL: time.Second})
	ctx := context.Background()
	r := newTestRetainer(js, res, "m")
	obs := jobStore(t, js, "m")
	for id := uint64(1); id <= 6; id++ {
		ref := putSnapshot(t, obs, cairnjs.ObjectName("m", id, "a", "sim"))
		m := &messages.Manifest{Schema: messages.SchemaVersion, Job: "m", CheckpointID: id, CompletedAt: time.Now(),
			Instances: map[string]messages.InstanceSnapshot{"a": {Incarnation: "x", Snapshot: ref}}}
		data, err := messages.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Manifests.Put(ctx, cairnjs.ManifestKey("m", id), data); err != nil {
			t.Fatal(err)
		}
	}
	// A marker as an object store Delete leaves it, of an object retention never saw.
	if _, err := obs.PutBytes(ctx, "m/0/old", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := obs.Delete(ctx, "m/0/old"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 2, Scan: true}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"m/5/a/sim", "m/6/a/sim"}) {
		t.Fatalf("objects after the pass: %v", got)
	}
	if n := streamMsgs(t, js, cairnjs.ObjectStream(cairnjs.SnapshotStore("m"))); n != 4 {
		t.Fatalf("%s holds %d messages for 2 one-chunk objects, want 4: markers left", cairnjs.ObjectStream(cairnjs.SnapshotStore("m")), n)
	}
	// Four purge markers now, gone after the 1 s marker TTL; the two retained manifests stay.
	natstest.Eventually(t, 10*time.Second, "manifest purge markers did not expire", func() bool {
		return streamMsgs(t, js, "KV_"+cairnjs.ManifestBucket) == 2
	})
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

// TestRetentionOnABucketWithoutMarkerTTL covers deployments whose CAIRN_MANIFESTS predates
// LimitMarkerTTL: retention still purges (markers then stay), and after the one-time update
// docs/failure-model.md gives (allow per-message TTLs, a marker TTL, compact), a new
// retention worker's markers expire and the old ones are gone.
func TestRetentionOnABucketWithoutMarkerTTL(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cairnjs.ManifestBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	_, js, res := srv.Resources(t, cairnjs.Options{})
	put := func(ids ...uint64) {
		for _, id := range ids {
			m := &messages.Manifest{Schema: messages.SchemaVersion, Job: "o", CheckpointID: id, Instances: map[string]messages.InstanceSnapshot{}}
			data, err := messages.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := res.Manifests.Put(ctx, cairnjs.ManifestKey("o", id), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(1, 2, 3)
	if _, _, _, err := newTestRetainer(js, res, "o").pass(ctx, loop.RetainRequest{Keep: 1}); err != nil {
		t.Fatalf("pass on a bucket without LimitMarkerTTL: %v", err)
	}
	if n := streamMsgs(t, js, "KV_"+cairnjs.ManifestBucket); n != 3 {
		t.Fatalf("KV_%s holds %d messages, want manifest 3 and two markers that stay", cairnjs.ManifestBucket, n)
	}
	// The one-time update: nats stream edit KV_CAIRN_MANIFESTS --allow-msg-ttl
	// --subject-del-markers-ttl 5s (here 1s), then nats kv compact CAIRN_MANIFESTS (which
	// removes markers older than 30 minutes; here all of them).
	st, err := js.Stream(ctx, "KV_"+cairnjs.ManifestBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowMsgTTL, cfg.SubjectDeleteMarkerTTL = true, time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("update the bucket: %v", err)
	}
	if err := res.Manifests.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(-1)); err != nil {
		t.Fatal(err)
	}
	put(4, 5)
	if _, _, _, err := newTestRetainer(js, res, "o").pass(ctx, loop.RetainRequest{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "markers did not expire after the update", func() bool {
		return streamMsgs(t, js, "KV_"+cairnjs.ManifestBucket) == 1
	})
}

// TestRetentionKeepsChains checks that every segment of a retained manifest's chain stays
// (its base and each delta, even one referenced only as a delta and older than every
// retained checkpoint), and that the segments of the chains no retained manifest needs
// any more go, on targeted passes and on a full scan.
func TestRetentionKeepsChains(t *testing.T) {
	srv := natstest.Start(t)
	_, js, res := srv.Resources(t, cairnjs.Options{})
	ctx := context.Background()
	obs := jobStore(t, js, "c")
	put := func(name string) messages.SnapshotRef { return putSnapshot(t, obs, name) }
	manifest := func(id uint64, base messages.SnapshotRef, deltas ...messages.SnapshotRef) {
		m := testManifest("c", id, base)
		m.Instances["a"] = messages.InstanceSnapshot{Incarnation: "x", Snapshot: base, Deltas: deltas}
		putManifest(t, res, cairnjs.ManifestKey("c", id), m)
	}
	oldBase, d2, d3 := put("c/1/a.base"), put("c/2/a"), put("c/3/a")
	newBase, d5, d6 := put("c/4/a.base"), put("c/5/a"), put("c/6/a")
	manifest(2, oldBase, d2)
	manifest(3, oldBase, d2, d3)
	manifest(4, newBase)
	manifest(5, newBase, d5)
	manifest(6, newBase, d5, d6)
	r := newTestRetainer(js, res, "c")
	r.passes = 1
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 4}); err != nil {
		t.Fatal(err)
	}
	// Manifest 3 is retained: the old base and both its deltas stay, although d2 belongs
	// to checkpoint 2, whose manifest is gone.
	if got := names(t, obs); !slices.Equal(got, []string{"c/1/a.base", "c/2/a", "c/3/a", "c/4/a.base", "c/5/a", "c/6/a"}) {
		t.Fatalf("retaining manifests 3-6: %v", got)
	}
	r.passes = 0 // a full scan
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 3}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"c/4/a.base", "c/5/a", "c/6/a"}) {
		t.Fatalf("retaining manifests 4-6: %v (the old chain %s %s %s should go)", got, oldBase.Object, d2.Object, d3.Object)
	}
}

// TestRetentionAcrossStores covers a job upgraded from the store every job shared
// (CAIRN_SNAPSHOTS) to its own: manifests reference objects of both; retention deletes
// each unreferenced object from the store it is in, and a full scan lists the shared store
// too (for the job's objects only) once a reference to it was seen. A job whose references
// are all in its own store never looks the shared store up.
func TestRetentionAcrossStores(t *testing.T) {
	js, res, r := partialRetainer(t, "u")
	ctx := context.Background()
	obs := jobStore(t, js, "u")
	shared, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: cairnjs.SnapshotBucket})
	if err != nil {
		t.Fatal(err)
	}
	oldA, oldB := putSnapshot(t, shared, "u/1/a"), putSnapshot(t, shared, "u/1/b")
	orphan := putSnapshot(t, shared, "u/1/c") // uploaded by an old operator, never acked
	other := putSnapshot(t, shared, "v/1/a")  // another job's
	if oldA.Store != "" || orphan.Store != "" {
		t.Fatalf("references to the shared store have store %q, want none", oldA.Store)
	}
	m1 := testManifest("u", 1, oldA, oldB)
	putManifest(t, res, cairnjs.ManifestKey("u", 1), m1)
	// Checkpoint 2: a's new snapshot in the job's store, b unchanged (still the old object).
	newA := putSnapshot(t, obs, "u/2/a")
	m2 := testManifest("u", 2, newA, oldB)
	putManifest(t, res, cairnjs.ManifestKey("u", 2), m2)
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, shared); !slices.Equal(got, []string{"u/1/b", "u/1/c", "v/1/a"}) {
		t.Fatalf("shared store after manifest 1 was retained out: %v (%s should go, %s stays referenced)", got, oldA.Object, oldB.Object)
	}
	r.passes = 0 // a full scan
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, shared); !slices.Equal(got, []string{"u/1/b", "v/1/a"}) {
		t.Fatalf("shared store after a full scan: %v (the orphan %s should go, %s of another job stays)", got, orphan.Object, other.Object)
	}
	if got := names(t, obs); !slices.Equal(got, []string{"u/2/a"}) {
		t.Fatalf("job's store: %v", got)
	}

	// A job that never referenced the shared store: full scans list its own store only, and
	// a shared store that does not exist is no error either.
	fresh := newTestRetainer(js, res, "w")
	wobs := jobStore(t, js, "w")
	w1, w2 := putSnapshot(t, wobs, "w/1/a"), putSnapshot(t, wobs, "w/2/a")
	putManifest(t, res, cairnjs.ManifestKey("w", 1), testManifest("w", 1, w1))
	putManifest(t, res, cairnjs.ManifestKey("w", 2), testManifest("w", 2, w2))
	putSnapshot(t, shared, "w/0/stray")
	if _, _, _, err := fresh.pass(ctx, loop.RetainRequest{Keep: 1, Scan: true}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, wobs); !slices.Equal(got, []string{"w/2/a"}) {
		t.Fatalf("job w's store: %v", got)
	}
	if got := names(t, shared); !slices.Contains(got, "w/0/stray") {
		t.Fatalf("a job with no reference to the shared store scanned it: %v", got)
	}
	if err := js.DeleteObjectStore(ctx, cairnjs.SnapshotBucket); err != nil {
		t.Fatal(err)
	}
	r.passes = 0
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1}); err != nil {
		t.Fatalf("a full scan with the shared store gone: %v", err)
	}
	if _, _, _, err := r.pass(ctx, loop.RetainRequest{Keep: 1, Dropped: []messages.SnapshotRef{{Object: "u/1/z", Size: 1, Digest: "SHA-256=z"}}}); err != nil {
		t.Fatalf("a pass deleting an object of the shared store, gone: %v", err)
	}
}
