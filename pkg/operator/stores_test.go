package operator_test

import (
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
)

// toSharedStore moves the objects refs name from the job's store into the store every job
// shared before stores were per job (CAIRN_SNAPSHOTS), as a deployment from then has them,
// and returns the references without a store, as operators from then wrote them.
func (e *env) toSharedStore(refs ...messages.SnapshotRef) []messages.SnapshotRef {
	e.t.Helper()
	ctx := e.ctx()
	shared, err := e.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: cairnjs.SnapshotBucket})
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]messages.SnapshotRef, len(refs))
	for i, ref := range refs {
		data, err := e.coord.Snapshots().GetBytes(ctx, ref.Object)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := shared.PutBytes(ctx, ref.Object, data); err != nil {
			e.t.Fatal(err)
		}
		if err := e.coord.Snapshots().Delete(ctx, ref.Object); err != nil {
			e.t.Fatal(err)
		}
		out[i] = ref
		out[i].Store = ""
	}
	return out
}

// TestSnapshotsOfTheSharedStoreAreRestoredNotReused: a manifest from before stores were per
// job references an object of CAIRN_SNAPSHOTS (no store); the instance restores it from
// there, and its next checkpoint, with the same state, uploads the snapshot into the job's
// store instead of referencing the old object again, so that references to the shared
// store die out.
func TestSnapshotsOfTheSharedStoreAreRestoredNotReused(t *testing.T) {
	e := newEnv(t)
	const inst = "blob-0"
	r := e.start(inst, &blobMachine{size: 4096})
	last := e.publish(inst, []byte("state"))
	waitPosition(t, r.rt, last)
	ack1 := e.checkpoint(1)
	if ack1.Snapshot.Store != cairnjs.SnapshotStore(testJob) {
		t.Fatalf("ack of checkpoint 1 references store %q, want %s", ack1.Snapshot.Store, cairnjs.SnapshotStore(testJob))
	}
	r.stop(t)
	ack1.Snapshot = e.toSharedStore(ack1.Snapshot)[0]
	e.coord.Complete(1, ack1)

	m := &blobMachine{size: 4096}
	r = e.start(inst, m)
	if info := r.rt.Info(); info.RestoredCheckpoint != 1 || r.rt.Position() != last {
		t.Fatalf("restored checkpoint %d at position %d, want checkpoint 1 at %d", info.RestoredCheckpoint, r.rt.Position(), last)
	}
	ack2 := e.checkpoint(2)
	if ack2.Snapshot.Store != cairnjs.SnapshotStore(testJob) || ack2.Written != 4096 || ack2.Snapshot.Digest != ack1.Snapshot.Digest {
		t.Fatalf("ack of checkpoint 2 %+v (written %d): want the same state uploaded into %s", ack2.Snapshot, ack2.Written, cairnjs.SnapshotStore(testJob))
	}
	if _, err := e.coord.Snapshots().GetInfo(e.ctx(), ack2.Snapshot.Object); err != nil {
		t.Fatalf("object %s of checkpoint 2 in the job's store: %v", ack2.Snapshot.Object, err)
	}
}

// TestKeyedChainOfTheSharedStoreGetsANewBase: a keyed state store restored from a chain
// whose base is in CAIRN_SNAPSHOTS writes a new base into the job's store at its next
// checkpoint rather than a delta on the old base, and restores from it with the same
// state once the shared store is gone.
func TestKeyedChainOfTheSharedStoreGetsANewBase(t *testing.T) {
	e := newEnv(t)
	const inst = "kv-0"
	r := e.start(inst, newKeyed(t, operator.KeyedConfig{}))
	last := e.publish(inst, []byte("p a 1"), []byte("p b 2"))
	waitPosition(t, r.rt, last)
	ack1 := e.checkpoint(1)
	e.coord.Complete(1, ack1)
	last = e.publish(inst, []byte("p c 3"))
	waitPosition(t, r.rt, last)
	ack2 := e.checkpoint(2)
	if len(ack2.Deltas) != 1 {
		t.Fatalf("checkpoint 2 acked %d deltas, want 1", len(ack2.Deltas))
	}
	r.stop(t)
	moved := e.toSharedStore(ack2.Refs()...)
	ack2.Snapshot, ack2.Deltas = moved[0], moved[1:]
	e.coord.Complete(2, ack2)

	k := newKeyed(t, operator.KeyedConfig{})
	r = e.start(inst, k)
	if info := r.rt.Info(); info.RestoredCheckpoint != 2 {
		t.Fatalf("restored checkpoint %d, want 2", info.RestoredCheckpoint)
	}
	last = e.publish(inst, []byte("d a"))
	waitPosition(t, r.rt, last)
	ack3 := e.checkpoint(3)
	if len(ack3.Deltas) != 0 || ack3.Snapshot.Store != cairnjs.SnapshotStore(testJob) {
		t.Fatalf("checkpoint 3 acked base %+v and %d deltas: want a new base in %s", ack3.Snapshot, len(ack3.Deltas), cairnjs.SnapshotStore(testJob))
	}
	e.coord.Complete(3, ack3)
	r.stop(t)
	if err := e.js.DeleteObjectStore(e.ctx(), cairnjs.SnapshotBucket); err != nil {
		t.Fatal(err)
	}
	k = newKeyed(t, operator.KeyedConfig{})
	r = e.start(inst, k)
	want := map[string]string{"b": "2", "c": "3"}
	if got := storeContents(t, r.rt, k); !maps.Equal(got, want) {
		t.Fatalf("state restored from checkpoint 3: %v, want %v", got, want)
	}
}

// TestBarrierAboveAStaleCounterIsFollowed: the id counter is read with a direct get, which
// a lagging replica may answer with an older value. A barrier whose id is above the
// counter as first read is followed when a read within about a second finds the counter
// at its id: here the counter reaches it only after the instance's first read.
func TestBarrierAboveAStaleCounterIsFollowed(t *testing.T) {
	e := newEnv(t)
	r := e.start("counter-0", &blobMachine{size: 16})
	waitPosition(t, r.rt, e.publish("counter-0", []byte("x")))
	if a := e.checkpoint(1); a.CheckpointID != 1 {
		t.Fatalf("ack %+v, want checkpoint 1", a)
	}
	// The instance's reads of the counter, seen on the direct get's subject.
	reads := make(chan *nats.Msg, 16)
	sub, err := e.nc.ChanSubscribe("$JS.API.DIRECT.GET.KV_"+cairnjs.ManifestBucket+".$KV."+cairnjs.ManifestBucket+"."+cairnjs.CounterKey(testJob), reads)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.coord.SendForged(messages.Barrier{CheckpointID: 5})
	select {
	case <-reads:
	case <-time.After(waitLong):
		t.Fatal("the instance never read the id counter")
	}
	e.coord.AdvanceCounter(5)
	a := e.nextAck()
	if a.CheckpointID != 5 || a.Kind == messages.AckDeclined {
		t.Fatalf("ack %+v, want an ack of checkpoint 5", a)
	}
	if e.logged("barrier ignored") {
		t.Fatal("the barrier was ignored before the counter was read again")
	}
}

// TestSharedSnapshotStore: with SharedSnapshotStore (cairn dev) snapshots go into the store
// every job shares, named in their references, an unchanged state reuses its object there,
// and a restart restores from it.
func TestSharedSnapshotStore(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	shared, err := cairnjs.EnsureSnapshotStore(ctx, e.js, cairnjs.Options{SharedSnapshotStore: true}, testJob)
	if err != nil {
		t.Fatal(err)
	}
	const inst = "blob-0"
	cfg := operator.DefaultConfig(testJob, inst)
	cfg.SharedSnapshotStore = true
	r := e.startWith(cfg, &blobMachine{size: 4096})
	last := e.publish(inst, []byte("state"))
	waitPosition(t, r.rt, last)
	ack1 := e.checkpoint(1)
	if ack1.Snapshot.Store != cairnjs.SnapshotBucket {
		t.Fatalf("ack of checkpoint 1 references store %q, want %s", ack1.Snapshot.Store, cairnjs.SnapshotBucket)
	}
	if _, err := shared.GetInfo(ctx, ack1.Snapshot.Object); err != nil {
		t.Fatalf("object %s in %s: %v", ack1.Snapshot.Object, cairnjs.SnapshotBucket, err)
	}
	if ack2 := e.checkpoint(2); ack2.Snapshot != ack1.Snapshot || ack2.Written != 0 {
		t.Fatalf("unchanged state acked %+v (written %d), want the object of checkpoint 1 reused", ack2.Snapshot, ack2.Written)
	}
	e.writeManifest(2, ack1)
	r.stop(t)
	r2 := e.startWith(cfg, &blobMachine{size: 4096})
	if r2.rt.Position() != last {
		t.Fatalf("restored at position %d, want %d", r2.rt.Position(), last)
	}
}
