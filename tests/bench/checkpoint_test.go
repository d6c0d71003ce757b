package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
)

const (
	// operators and stateSize are the shape of the checkpoint measured: 8 instances with
	// 1 MiB of state each.
	operators = 8
	stateSize = 1 << 20
	// chunkSize is the object store chunk size the operator runtime uses.
	chunkSize = 1 << 20
)

// BenchmarkCheckpoint8x1MiB measures trigger→completed of a checkpoint of 8 operator
// runtimes (pkg/operator.New) whose state is 1 MiB of random bytes that differ from
// one checkpoint to the next, so every checkpoint uploads 8 MiB; a real configsvc and
// coordinator, file storage. Checkpoints are fired on demand (see trigger) so that nothing
// else runs meanwhile. Each sample is the arrival of the completed event at a subscriber
// minus the barrier's TriggeredAt (the coordinator's stamp; one process, one clock): id
// allocation, barrier, 8 × (spool and hash, object put, ack), manifest write, completed
// event. The table also gives the event's FinishedAt − TriggeredAt, which the coordinator
// stamps before it writes the manifest.
//
// The floor is measured before each checkpoint, once the coordinator's retention pass for
// the previous one has deleted the objects that fell out of retention: 8 goroutines on 8
// connections each put 1 MiB of random bytes into CAIRN_SNAPSHOTS with the runtime's chunk
// size, timed until the last put returns; the objects are then deleted (not timed). The
// floor and the checkpoint each start after the same idle pause.
func BenchmarkCheckpoint8x1MiB(b *testing.B) {
	c := newCluster(b)
	c.startConfigsvc()
	c.startCoordinator()
	runtimes := make([]*operator.Runtime, operators)
	for i := range operators {
		runtimes[i] = c.startOperator(fmt.Sprintf("op-%d", i), newNoiseMachine(stateSize, uint64(i)))
	}
	trig := newTrigger(c)
	events := follow[messages.CheckpointEvent](c, c.subjects.CheckpointEvent(job, "*"))
	deletions := followDeletions(c)
	c.waitStatus("lease held and 8 operators registered", leading(operators))

	// settle waits until no checkpoint is pending and retention (of the default number of
	// checkpoints) has deleted the objects of the checkpoint that fell out of it; it counts
	// checkpoints the schedule fired by itself, which would mean postpone came too late.
	retain := messages.DefaultConfig().Retain
	completions, extra := 0, 0
	settle := func() {
		if n := int(trig.quiet().Completed); n != completions {
			extra += n - completions
			completions = n
		}
		deletions.await(b, operators*(completions-retain))
	}
	checkpoint := func() arrival[*messages.CheckpointEvent] {
		_, _, _, br := trig.fire()
		trig.postpone()
		e := next(b, events, "end of the checkpoint", func(a arrival[*messages.CheckpointEvent]) bool {
			return a.msg.CheckpointID == br.msg.CheckpointID
		})
		switch {
		case e.msg.Outcome != messages.Completed:
			b.Fatalf("checkpoint %d %s: %s: %s", e.msg.CheckpointID, e.msg.Outcome, e.msg.Reason, e.msg.Detail)
		case len(e.msg.Participants) != operators || e.msg.Bytes != operators*stateSize:
			b.Fatalf("checkpoint %d: %d participants, %d bytes; want %d and %d", e.msg.CheckpointID, len(e.msg.Participants), e.msg.Bytes, operators, operators*stateSize)
		}
		completions++
		return e
	}
	for range retain + 1 {
		settle()
		checkpoint()
	}
	floor := newPutFloor(c, operators, stateSize)

	var received, stamped, floors sample
	for b.Loop() {
		settle()
		rest()
		floors = append(floors, floor.sample(b))
		rest()
		e := checkpoint()
		received = append(received, e.at.Sub(e.msg.TriggeredAt))
		stamped = append(stamped, e.msg.FinishedAt.Sub(e.msg.TriggeredAt))
	}
	b.ReportMetric(0, "ns/op")
	var reused uint64
	for _, rt := range runtimes {
		reused += rt.Stats().Reused
	}
	if reused > 0 {
		b.Errorf("%d snapshots were not uploaded because they had not changed; every checkpoint must upload 8 MiB", reused)
	}
	const floorName = "8 parallel object puts of 1 MiB"
	figs := []figure{
		{name: "checkpoint trigger→completed event", floorName: floorName, got: received, floor: floors},
		{name: "checkpoint FinishedAt−TriggeredAt", floorName: floorName, got: stamped, floor: floors},
	}
	figs[0].report(b, "", true)
	figs[1].report(b, "stamped-", false)
	var notes []string
	if extra > 0 {
		notes = append(notes, fmt.Sprintf("%d checkpoints were triggered by the schedule rather than on demand", extra))
	}
	b.Log(table(figs, notes...))
}

// deletions counts the snapshot objects of the job deleted from its snapshot store, as seen
// on the object store's meta subjects.
type deletions struct {
	ch    chan struct{}
	count int
}

func followDeletions(c *cluster) *deletions {
	c.b.Helper()
	d := &deletions{ch: make(chan struct{}, 4096)}
	subject := fmt.Sprintf("$O.%s.M.>", cjs.SnapshotStore(job))
	sub, err := c.obs.Subscribe(subject, func(m *nats.Msg) {
		var info jetstream.ObjectInfo
		if err := json.Unmarshal(m.Data, &info); err != nil {
			c.b.Errorf("object meta on %s: %v", m.Subject, err)
			return
		}
		if info.Deleted && strings.HasPrefix(info.Name, job+"/") {
			d.ch <- struct{}{}
		}
	})
	if err != nil {
		c.b.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := c.obs.Flush(); err != nil {
		c.b.Fatalf("subscribe %s: %v", subject, err)
	}
	c.b.Cleanup(func() { _ = sub.Unsubscribe() })
	return d
}

// await waits until n objects of the job have been deleted in all.
func (d *deletions) await(b *testing.B, n int) {
	b.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for d.count < n {
		select {
		case <-d.ch:
			d.count++
		case <-deadline.C:
			b.Fatalf("retention deleted %d snapshot objects within %s; want %d", d.count, waitTimeout, n)
		}
	}
}

// noiseMachine is an operator Machine whose state is random bytes that differ from one
// checkpoint to the next, so that no upload is skipped as unchanged. It alternates between
// two random buffers it never modifies: a snapshot costs nothing to capture, and what is
// measured is Cairn's path from barrier to manifest. It takes no input.
type noiseMachine struct {
	states [2][]byte
	// next is the index of the buffer the next snapshot captures.
	next int
}

var _ operator.Machine = (*noiseMachine)(nil)

func newNoiseMachine(size int, seed uint64) *noiseMachine {
	return &noiseMachine{states: [2][]byte{randomBytes(size, 2*seed), randomBytes(size, 2*seed+1)}}
}

// randomBytes returns size pseudo-random bytes determined by seed.
func randomBytes(size int, seed uint64) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	buf := make([]byte, size)
	_, _ = rand.NewChaCha8(key).Read(buf)
	return buf
}

// Apply implements operator.Machine; the machine ignores input.
func (m *noiseMachine) Apply(operator.Record) error { return nil }

// Snapshot implements operator.Machine.
func (m *noiseMachine) Snapshot() (operator.Snapshot, error) {
	s := noiseSnapshot(m.states[m.next])
	m.next = 1 - m.next
	return s, nil
}

// Restore implements operator.Machine: the restored bytes become the state snapshotted
// last, so the next snapshot, the other buffer, differs from it.
func (m *noiseMachine) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.states[1-m.next] = data
	return nil
}

// noiseSnapshot is a captured noiseMachine state; its bytes are never modified.
type noiseSnapshot []byte

// Persist implements operator.Snapshot.
func (s noiseSnapshot) Persist(w io.Writer) error {
	_, err := w.Write(s)
	return err
}

// Release implements operator.Snapshot.
func (noiseSnapshot) Release() {}

// putFloor is the floor of BenchmarkCheckpoint8x1MiB: parallel puts into the snapshot
// object store, one connection per writer as the operators have.
type putFloor struct {
	stores []jetstream.ObjectStore
	data   [][]byte
	n      int
}

func newPutFloor(c *cluster, writers, size int) *putFloor {
	c.b.Helper()
	f := &putFloor{}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for i := range writers {
		_, js := c.connect()
		obs, err := cjs.EnsureSnapshotStore(ctx, js, cjs.Options{}, job)
		if err != nil {
			c.b.Fatalf("floor object store: %v", err)
		}
		f.stores = append(f.stores, obs)
		f.data = append(f.data, randomBytes(size, 1000+uint64(i)))
	}
	return f
}

// sample puts every writer's bytes at once and returns the time until the last put
// returned; then it deletes the objects. Object names are outside the job's <job>/ prefix,
// so retention leaves them alone.
func (f *putFloor) sample(b *testing.B) time.Duration {
	b.Helper()
	f.n++
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	names := make([]string, len(f.stores))
	errs := make([]error, len(f.stores))
	for i := range f.stores {
		names[i] = fmt.Sprintf("floor-%s/%d/%d", job, f.n, i)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i, obs := range f.stores {
		wg.Go(func() {
			meta := jetstream.ObjectMeta{Name: names[i], Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}}
			_, errs[i] = obs.Put(ctx, meta, bytes.NewReader(f.data[i]))
		})
	}
	wg.Wait()
	took := time.Since(start)
	for i, obs := range f.stores {
		if errs[i] != nil {
			b.Fatalf("floor put %s: %v", names[i], errs[i])
		}
		if err := obs.Delete(ctx, names[i]); err != nil {
			b.Fatalf("floor delete %s: %v", names[i], err)
		}
	}
	return took
}
