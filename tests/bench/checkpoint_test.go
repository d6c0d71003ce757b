package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
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
// coordinator, file storage. The job runs on interval 24h and each checkpoint is asked for
// with a manual trigger (cairn.checkpoint.trigger.<job>), so that nothing else runs
// meanwhile. Each sample is the arrival of the completed event at a subscriber minus the
// barrier's TriggeredAt (the coordinator's stamp; one process, one clock): id allocation,
// barrier, 8 × (spool and hash, object put, ack), manifest write, completed event. The
// table also gives the event's FinishedAt − TriggeredAt, which the coordinator stamps
// before it writes the manifest.
//
// The floor is measured before each checkpoint, once no retention pass runs (see
// retention.settled): 8 goroutines on 8 connections each put 1 MiB of random bytes into
// CAIRN_SNAPSHOTS with the runtime's chunk size, timed until the last put returns; the
// objects are then deleted (not timed). The floor and the checkpoint each start after the
// same idle pause.
func BenchmarkCheckpoint8x1MiB(b *testing.B) {
	c := newCluster(b)
	c.startConfigsvc()
	c.startCoordinator()
	runtimes := make([]*operator.Runtime, operators)
	for i := range operators {
		runtimes[i] = c.startOperator(fmt.Sprintf("op-%d", i), newNoiseMachine(stateSize, uint64(i)))
	}
	events := follow[messages.CheckpointEvent](c, c.subjects.CheckpointEvent(job, "*"))
	version := c.set(`{"interval":"24h"}`).Version
	c.waitStatus("lease held, 8 operators registered and interval 24h applied", func(st messages.Status) bool {
		return leading(operators)(st) && st.Config.Version == version
	})
	retention := newRetention(c)

	// settle waits until no checkpoint is pending (the first may have started on the
	// default interval) and no retention pass runs.
	settle := func() {
		c.waitStatus("no checkpoint pending", func(st messages.Status) bool { return len(st.Pending) == 0 })
		retention.settled()
	}
	checkpoint := func() arrival[*messages.CheckpointEvent] {
		var r messages.CheckpointResult
		if code := c.request(c.subjects.CheckpointTrigger(job), "", &r); code != "" {
			b.Fatalf("manual checkpoint: error %s", code)
		}
		e := next(b, events, "end of the checkpoint", func(a arrival[*messages.CheckpointEvent]) bool {
			return a.msg.CheckpointID == r.ID
		})
		switch {
		case e.msg.Outcome != messages.Completed:
			b.Fatalf("checkpoint %d %s: %s: %s", e.msg.CheckpointID, e.msg.Outcome, e.msg.Reason, e.msg.Detail)
		case len(e.msg.Participants) != operators || e.msg.Bytes != operators*stateSize:
			b.Fatalf("checkpoint %d: %d participants, %d bytes; want %d and %d", e.msg.CheckpointID, len(e.msg.Participants), e.msg.Bytes, operators, operators*stateSize)
		}
		return e
	}
	for range messages.DefaultConfig().Retain + 1 {
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
	b.Log(table(figs))
}

// retention tells, between measurements, when no retention pass of the job runs. It
// learns the objects each manifest references when it first sees the manifest (a manifest
// is retained for several checkpoints, and settled runs after each).
type retention struct {
	c *cluster
	// refs are the objects of each manifest seen and not yet seen removed with their
	// objects.
	refs map[uint64][]string
}

func newRetention(c *cluster) *retention { return &retention{c: c, refs: map[uint64][]string{}} }

// settled waits until no retention pass runs: the job's manifests stay the same over an
// idle pause, and the objects of every manifest retention purged are gone, unless a
// manifest still there references them (a pass purges the manifests it drops first, then
// their objects). Retention is paced (every 10 completions or 10 s, see
// docs/semantics.md), so the manifests and objects of checkpoints that fell out of
// retention may still be stored; what matters is that no pass runs beside the floor or the
// checkpoint. A completion asks for its pass before the job answers the status that shows
// it ended, and the pass starts at once, so it changes the manifests during the pause.
func (r *retention) settled() {
	r.c.b.Helper()
	before := r.manifests()
	natstest.Eventually(r.c.b, waitTimeout, "a retention pass to end", func() bool {
		rest()
		after := r.manifests()
		stable := slices.Equal(after, before)
		before = after
		return r.learn(after) && r.removed(after) && stable
	})
}

// manifests returns the ids of the job's manifests (<job>.<id>), sorted.
func (r *retention) manifests() []uint64 {
	r.c.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	keys, err := natstest.Keys(ctx, r.c.res.Manifests, job+".*")
	if err != nil {
		r.c.b.Fatalf("list manifests: %v", err)
	}
	var ids []uint64
	for _, k := range keys {
		if id, err := strconv.ParseUint(strings.TrimPrefix(k, job+"."), 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// learn reads the objects of the manifests of ids not seen before; false when one was
// purged meanwhile.
func (r *retention) learn(ids []uint64) bool {
	r.c.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, id := range ids {
		if _, ok := r.refs[id]; ok {
			continue
		}
		e, err := r.c.res.Manifests.Get(ctx, cairnjs.ManifestKey(job, id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false
		}
		if err != nil {
			r.c.b.Fatalf("read manifest %d: %v", id, err)
		}
		var m messages.Manifest
		if err := messages.Unmarshal(e.Value(), &m); err != nil {
			r.c.b.Fatalf("manifest %d: %v", id, err)
		}
		r.refs[id] = []string{}
		for _, is := range m.Instances {
			for _, ref := range is.Refs() {
				r.refs[id] = append(r.refs[id], ref.Object)
			}
		}
	}
	return true
}

// removed reports whether the objects of every manifest seen but no longer among ids are
// gone, those a manifest of ids references aside; it forgets the manifests found so.
func (r *retention) removed(ids []uint64) bool {
	r.c.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	live := map[string]bool{}
	for _, id := range ids {
		for _, name := range r.refs[id] {
			live[name] = true
		}
	}
	for id, names := range r.refs {
		if slices.Contains(ids, id) {
			continue
		}
		for _, name := range names {
			if live[name] {
				continue
			}
			_, err := r.c.snapshots().GetInfo(ctx, name)
			if err == nil {
				return false
			}
			if !errors.Is(err, jetstream.ErrObjectNotFound) {
				r.c.b.Fatalf("look up object %s: %v", name, err)
			}
		}
		delete(r.refs, id)
	}
	return true
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
		obs, err := cairnjs.EnsureSnapshotStore(ctx, js, cairnjs.Options{}, job)
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
