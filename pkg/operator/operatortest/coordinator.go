package operatortest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Wait bounds every wait of a Coordinator.
const Wait = 15 * time.Second

// Coordinator plays the coordinator of one job on Cairn's default subject prefix, one step
// at a time: the test sends each barrier, reads each ack and completes or aborts each
// checkpoint when it chooses. It fails the test (t.Fatal) when a step fails, so call its
// methods on the test's goroutine.
type Coordinator struct {
	t         testing.TB
	nc        *nats.Conn
	manifests jetstream.KeyValue
	job       string
	subj      cairnjs.Subjects
	acks      chan *nats.Msg
	snapshots jetstream.ObjectStore
}

// NewCoordinator returns a coordinator of job on nc's server, which must hold Cairn's
// streams and buckets (StartServer makes one). Like a coordinator before the job's first
// barrier, it creates the job's snapshot store; it subscribes to the acks of every
// instance of the job until the test ends.
func NewCoordinator(t testing.TB, nc *nats.Conn, job string) *Coordinator {
	t.Helper()
	c := &Coordinator{t: t, nc: nc, job: job, acks: make(chan *nats.Msg, 64)}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if c.manifests, err = js.KeyValue(ctx, cairnjs.ManifestBucket); err != nil {
		t.Fatalf("look up %s: %v", cairnjs.ManifestBucket, err)
	}
	if c.snapshots, err = cairnjs.EnsureSnapshotStore(ctx, js, cairnjs.Options{}, job); err != nil {
		t.Fatalf("create the snapshot store of %s: %v", job, err)
	}
	sub, err := nc.ChanSubscribe(c.subj.InstanceAck(job, "*"), c.acks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

// Snapshots returns the job's snapshot store.
func (c *Coordinator) Snapshots() jetstream.ObjectStore { return c.snapshots }

// Barrier sends the barrier of checkpoint id, without a fencing token.
func (c *Coordinator) Barrier(id uint64) {
	c.t.Helper()
	c.BarrierWithToken(id, 0)
}

// BarrierWithToken sends the barrier of checkpoint id carrying a coordinator's fencing
// token.
func (c *Coordinator) BarrierWithToken(id, token uint64) {
	c.t.Helper()
	c.SendBarrier(messages.Barrier{CheckpointID: id, Token: token})
}

// SendBarrier sends b after filling in the schema, job, config version 1, trigger time
// and coordinator. Like a lease holder it first advances the job's id counter to b's id and
// its lease key's revision to b's token, so that operators trust the barrier.
func (c *Coordinator) SendBarrier(b messages.Barrier) {
	c.t.Helper()
	c.hold(b.CheckpointID, b.Token)
	c.SendForged(b)
}

// AdvanceCounter advances the job's id counter to id, as a lease holder does before it
// sends barrier id, when it is below.
func (c *Coordinator) AdvanceCounter(id uint64) {
	c.t.Helper()
	c.hold(id, 0)
}

// SendForged sends b as SendBarrier does, without touching the counter or the lease: a
// barrier that no lease holder sent.
func (c *Coordinator) SendForged(b messages.Barrier) {
	c.t.Helper()
	b.Schema, b.Job, b.ConfigVersion, b.TriggeredAt, b.Coordinator = messages.SchemaVersion, c.job, 1, time.Now().UTC(), "test"
	data, err := messages.Marshal(&b)
	if err != nil {
		c.t.Fatal(err)
	}
	msg := nats.NewMsg(c.subj.Barrier(c.job))
	msg.Data = data
	msg.Header.Set(messages.HeaderCheckpointID, strconv.FormatUint(b.CheckpointID, 10))
	msg.Header.Set(messages.HeaderConfigVersion, "1")
	if err := c.nc.PublishMsg(msg); err != nil {
		c.t.Fatal(err)
	}
}

// hold advances the job's id counter in CAIRN_MANIFESTS to at least id and writes the
// job's lease key in CAIRN_LEASES until its revision is at least token.
func (c *Coordinator) hold(id, token uint64) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if _, err := cairnjs.UpdateKey(ctx, c.nc, c.manifests, cairnjs.CounterKey(c.job), func(cur []byte) ([]byte, error) {
		var last messages.Counter
		if cur != nil {
			if err := messages.Unmarshal(cur, &last); err != nil {
				return nil, err
			}
		}
		if last.Last >= id {
			return nil, cairnjs.ErrNoChange
		}
		return messages.Marshal(&messages.Counter{Schema: messages.SchemaVersion, Job: c.job, Last: id})
	}); err != nil {
		c.t.Fatalf("advance the id counter to %d: %v", id, err)
	}
	if token == 0 {
		return
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		c.t.Fatal(err)
	}
	leases, err := js.KeyValue(ctx, cairnjs.LeaseBucket)
	if err != nil {
		c.t.Fatal(err)
	}
	lease, err := messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: c.job, Holder: "test", AcquiredAt: time.Now().UTC()})
	if err != nil {
		c.t.Fatal(err)
	}
	for {
		rev, err := leases.Put(ctx, cairnjs.LeaseKey(c.job), lease)
		if err != nil {
			c.t.Fatalf("write the lease of %s: %v", c.job, err)
		}
		if rev >= token {
			return
		}
	}
}

// NextAck returns the next ack or decline.
func (c *Coordinator) NextAck() messages.Ack {
	c.t.Helper()
	select {
	case msg := <-c.acks:
		var a messages.Ack
		if err := messages.Unmarshal(msg.Data, &a); err != nil {
			c.t.Fatalf("ack: %v", err)
		}
		return a
	case <-time.After(Wait):
		c.t.Fatal("no ack")
	}
	return messages.Ack{}
}

// Checkpoint sends barrier id and returns the next ack, failing on a decline or an ack
// of another checkpoint.
func (c *Coordinator) Checkpoint(id uint64) messages.Ack {
	c.t.Helper()
	c.Barrier(id)
	a := c.NextAck()
	if a.CheckpointID != id || a.Kind != messages.AckDone && a.Kind != messages.AckChain {
		c.t.Fatalf("ack = %+v, want an ack of checkpoint %d", a, id)
	}
	return a
}

// WriteManifest writes the manifest of checkpoint id from acks under <job>.<id> and
// <job>.latest, as the coordinator does when a checkpoint completes.
func (c *Coordinator) WriteManifest(id uint64, acks ...messages.Ack) {
	c.t.Helper()
	mf := messages.Manifest{
		Schema:        messages.SchemaVersion,
		Job:           c.job,
		CheckpointID:  id,
		ConfigVersion: 1,
		TriggeredAt:   time.Now().UTC(),
		CompletedAt:   time.Now().UTC(),
		Instances:     make(map[string]messages.InstanceSnapshot),
	}
	for _, a := range acks {
		mf.Instances[a.Instance] = messages.InstanceSnapshot{Incarnation: a.Incarnation, Snapshot: a.Snapshot, Deltas: a.Deltas, Positions: a.Positions}
	}
	data, err := messages.Marshal(&mf)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	for _, k := range []string{cairnjs.ManifestKey(c.job, id), cairnjs.LatestKey(c.job)} {
		if _, err := c.manifests.Put(ctx, k, data); err != nil {
			c.t.Fatal(err)
		}
	}
}

// Event publishes the checkpoint event of id with outcome (and reason, for an abort).
func (c *Coordinator) Event(id uint64, outcome messages.Outcome, reason messages.AbortReason) {
	c.t.Helper()
	ev := messages.CheckpointEvent{Schema: messages.SchemaVersion, Job: c.job, CheckpointID: id, ConfigVersion: 1,
		Outcome: outcome, TriggeredAt: time.Now().UTC(), FinishedAt: time.Now().UTC(), Reason: reason}
	data, err := messages.Marshal(&ev)
	if err != nil {
		c.t.Fatal(err)
	}
	name := "completed"
	if outcome == messages.Aborted {
		name = "aborted"
	}
	if err := c.nc.Publish(c.subj.CheckpointEvent(c.job, name), data); err != nil {
		c.t.Fatal(err)
	}
}

// Complete completes checkpoint id: it writes the manifest from acks and publishes the
// completed event.
func (c *Coordinator) Complete(id uint64, acks ...messages.Ack) {
	c.t.Helper()
	c.WriteManifest(id, acks...)
	c.Event(id, messages.Completed, 0)
}

// Acks is the channel the acks and declines arrive on, for a test that checks that none
// came.
func (c *Coordinator) Acks() <-chan *nats.Msg { return c.acks }
