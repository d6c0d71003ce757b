package operator_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
)

func TestSlowPersistDoesNotBlockProcessing(t *testing.T) {
	e := newEnv(t)
	m := &gateMachine{gate: make(chan struct{}), persisting: make(chan struct{})}
	r := e.start("slow-0", m)
	before := e.publish("slow-0", []byte("1"), []byte("2"), []byte("3"))
	waitPosition(t, r.rt, before)
	e.barrier(1)
	select {
	case <-m.persisting:
	case <-time.After(waitLong):
		t.Fatal("Persist never started")
	}

	// Persist is blocked: records keep being applied and Do keeps answering.
	var payloads [][]byte
	for range 50 {
		payloads = append(payloads, []byte("x"))
	}
	last := e.publish("slow-0", payloads...)
	waitPosition(t, r.rt, last)
	var applied int
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := r.rt.Do(ctx, func() { applied = m.applied }); err != nil {
		t.Fatal(err)
	}
	if applied != 53 {
		t.Fatalf("applied %d records while Persist was blocked, want 53", applied)
	}
	select {
	case <-e.coord.Acks():
		t.Fatal("acked before Persist returned")
	default:
	}

	close(m.gate)
	ack := e.nextAck()
	if ack.Kind != messages.AckDone || ack.Positions[cairnjs.InputStream] != before {
		t.Fatalf("ack %+v, want the snapshot at position %d", ack, before)
	}
	data, err := e.coord.Snapshots().GetString(e.ctx(), ack.Snapshot.Object)
	if err != nil || data != "3" {
		t.Fatalf("snapshot %q (%v), want the 3 records before the barrier", data, err)
	}
}

func TestLargeSnapshotSpoolsAndRoundTrips(t *testing.T) {
	const size = 9<<20 + 12345 // above the in-memory spool limit, several 1 MiB chunks
	e := newEnv(t)
	r := e.start("blob-0", &blobMachine{size: size})
	last := e.publish("blob-0", []byte("0123456789abcdef"))
	waitPosition(t, r.rt, last)
	ack := e.checkpoint(1)
	if ack.Snapshot.Size != size {
		t.Fatalf("acked size %d, want %d", ack.Snapshot.Size, size)
	}
	info, err := e.coord.Snapshots().GetInfo(e.ctx(), ack.Snapshot.Object)
	if err != nil {
		t.Fatal(err)
	}
	if info.Opts == nil || info.Opts.ChunkSize != 1<<20 || info.Chunks != 10 {
		t.Fatalf("object stored with options %+v in %d chunks, want 1 MiB chunks", info.Opts, info.Chunks)
	}
	if gotSize, digest := e.objectDigest(ack.Snapshot.Object); gotSize != size || digest != ack.Snapshot.Digest {
		t.Fatalf("object %d bytes %s, ack %d %s", gotSize, digest, size, ack.Snapshot.Digest)
	}
	e.writeManifest(1, ack)
	r.stop(t)

	m := &blobMachine{size: size}
	r2 := e.start("blob-0", m)
	want := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	var same bool
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := r2.rt.Do(ctx, func() { same = bytes.Equal(m.state, want) }); err != nil {
		t.Fatal(err)
	}
	if !same || r2.rt.Position() != last {
		t.Fatalf("restored state equal: %v, position %d; want equal and %d", same, r2.rt.Position(), last)
	}
}

func TestFailedSnapshotIsDeclined(t *testing.T) {
	tests := []struct {
		name    string
		machine *failingMachine
		reason  string
		release int
	}{
		{name: "snapshot fails", machine: &failingMachine{snapshotErr: errors.New("state locked")}, reason: "snapshot: state locked"},
		{name: "persist fails", machine: &failingMachine{persistErr: errors.New("disk on fire")}, reason: "persist: disk on fire", release: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.start("fail-0", tt.machine)
			e.barrier(1)
			ack := e.nextAck()
			if ack.Kind != messages.AckDeclined || ack.CheckpointID != 1 || ack.Incarnation != r.rt.Incarnation() || !strings.Contains(ack.Reason, tt.reason) {
				t.Fatalf("ack %+v, want a decline of checkpoint 1 saying %q", ack, tt.reason)
			}
			natstest.Eventually(t, waitLong, "snapshot not released", func() bool { return tt.machine.releasedCount() == tt.release })
			if objs := e.objects(); len(objs) != 0 {
				t.Fatalf("objects %v after a decline", objs)
			}
			if st := r.rt.Stats(); st.Declined != 1 || st.Acked != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestShutdownDrainsPendingSnapshots(t *testing.T) {
	e := newEnv(t)
	m := &gateMachine{gate: make(chan struct{}), persisting: make(chan struct{})}
	r := e.start("slow-0", m)
	last := e.publish("slow-0", []byte("1"), []byte("2"))
	waitPosition(t, r.rt, last)
	e.barrier(1)
	select {
	case <-m.persisting:
	case <-time.After(waitLong):
		t.Fatal("Persist never started")
	}
	e.barrier(2)
	natstest.Eventually(t, waitLong, "second barrier not handled", func() bool {
		var n int
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if err := r.rt.Do(ctx, func() { n = m.snapshots }); err != nil {
			t.Fatal(err)
		}
		return n == 2
	})

	// Stop while the first snapshot is still being persisted and the second waits.
	stopped := make(chan struct{})
	go func() {
		r.stop(t)
		close(stopped)
	}()
	natstest.Eventually(t, waitLong, "processing did not stop", func() bool {
		return errors.Is(r.rt.Do(context.Background(), func() {}), operator.ErrStopped)
	})
	close(m.gate)
	for _, id := range []uint64{1, 2} {
		if ack := e.nextAck(); ack.CheckpointID != id || ack.Kind != messages.AckDone {
			t.Fatalf("ack %+v, want checkpoint %d acked while stopping", ack, id)
		}
	}
	<-stopped
	key := cairnjs.RegistrationKey(testJob, "slow-0")
	if _, err := e.res.Leases.Get(e.ctx(), key); err == nil {
		t.Fatal("registration left after shutdown")
	}
}
