package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestAcksThatDoNotMatchTheirSubjectAreDropped: the expected instance i-0 answers the first
// barrier only with forged acks, each otherwise valid (its incarnation, the checkpoint's
// id): one on another instance's subject naming i-0, one on i-0's subject referencing a
// snapshot in another job's store. The coordinator drops both, so that checkpoint times
// out (5 s); the later ones, also answered with a genuine ack, complete, and their
// manifests reference the job's own store.
func TestAcksThatDoNotMatchTheirSubjectAreDropped(t *testing.T) {
	c := newCluster(t, time.Second)
	c.start("c1")
	const job, inst = "a", "i-0"
	subjects := cairnjs.Subjects{}
	inc := "sim-" + inst
	ack := func(id uint64, store string) []byte {
		data, err := messages.Marshal(&messages.Ack{
			Schema: messages.SchemaVersion, Job: job, CheckpointID: id, Instance: inst, Incarnation: inc, Kind: messages.AckDone,
			Snapshot:  messages.SnapshotRef{Store: store, Object: cairnjs.ObjectName(job, id, inst, "sim"), Size: 1, Digest: "SHA-256=sim"},
			Positions: map[string]uint64{cairnjs.InputStream: id},
		})
		if err != nil {
			t.Error(err)
		}
		return data
	}
	sub, err := c.nc.Subscribe(subjects.Barrier(job), func(m *nats.Msg) {
		var b messages.Barrier
		if messages.Unmarshal(m.Data, &b) != nil {
			return
		}
		_ = c.nc.Publish(subjects.InstanceAck(job, "i-1"), ack(b.CheckpointID, cairnjs.SnapshotStore(job)))
		_ = c.nc.Publish(subjects.InstanceAck(job, inst), ack(b.CheckpointID, cairnjs.SnapshotStore("b")))
		if b.CheckpointID > 1 {
			_ = c.nc.Publish(subjects.InstanceAck(job, inst), ack(b.CheckpointID, cairnjs.SnapshotStore(job)))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	aborted := make(chan messages.CheckpointEvent, 16)
	asub, err := c.nc.Subscribe(subjects.CheckpointEvent(job, "aborted"), func(m *nats.Msg) {
		var ev messages.CheckpointEvent
		if messages.Unmarshal(m.Data, &ev) == nil {
			aborted <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = asub.Unsubscribe() }()
	reg, err := messages.Marshal(&messages.Registration{Schema: messages.SchemaVersion, Job: job, Instance: inst, Incarnation: inc, StartedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.res.Leases.Put(t.Context(), cairnjs.RegistrationKey(job, inst), reg); err != nil {
		t.Fatal(err)
	}
	renewed := make(chan struct{})
	defer func() { <-renewed }()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	go func() {
		defer close(renewed)
		tick := time.NewTicker(c.ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := c.res.Leases.Put(ctx, cairnjs.RegistrationKey(job, inst), reg); err != nil && ctx.Err() == nil {
					t.Errorf("renew the registration: %v", err)
				}
			}
		}
	}()
	c.configure(1, 200*time.Millisecond, job)

	// The first checkpoint's barrier, then its timeout (the config's 5 s).
	var ev messages.CheckpointEvent
	select {
	case ev = <-aborted:
	case <-time.After(30 * time.Second):
		t.Fatalf("checkpoint 1 did not abort; completed: %v", c.completedCounts())
	}
	if ev.CheckpointID != 1 || ev.Reason != messages.AbortTimeout {
		t.Fatalf("aborted %+v, want checkpoint 1 by timeout", ev)
	}
	if n := c.completedCounts()[job]; n != 0 {
		t.Fatalf("%d checkpoints completed on forged acks", n)
	}
	// The next ones, answered genuinely, complete.
	natstest.Eventually(t, 20*time.Second, "no checkpoint completed on genuine acks", func() bool {
		return c.completedCounts()[job] > 0
	})
	e, err := c.res.Manifests.Get(t.Context(), cairnjs.LatestKey(job))
	if err != nil {
		t.Fatal(err)
	}
	var mf messages.Manifest
	if err := messages.Unmarshal(e.Value(), &mf); err != nil {
		t.Fatal(err)
	}
	if got := mf.Instances[inst].Snapshot.Store; mf.CheckpointID < 2 || got != cairnjs.SnapshotStore(job) {
		t.Fatalf("manifest %d references store %q, want a checkpoint after 1 in %s", mf.CheckpointID, got, cairnjs.SnapshotStore(job))
	}
}
