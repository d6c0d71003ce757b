package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// feed publishes input events for the instances, round robin, until stop is called;
// publish errors are reported with t.Errorf (it runs off the test goroutine).
func (s *system) feed(job string, instances ...string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			inst := instances[i%len(instances)]
			data := fmt.Appendf(nil, `{"key":"k%d","value":%d}`, i%50, i%13+1)
			if _, err := s.js.Publish(ctx, subjects.Input(job, inst), data); err != nil && ctx.Err() == nil {
				s.t.Errorf("feed %s: %v", inst, err)
				return
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// streamState returns the state of a stream.
func (s *system) streamState(name string) jetstream.StreamState {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, name)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State
}

// liveObjects lists job's snapshot store: object name → info.
func (s *system) liveObjects(job string) map[string]*jetstream.ObjectInfo {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	infos, err := natstest.Objects(ctx, s.snapshots(job))
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]*jetstream.ObjectInfo{}
	for _, i := range infos {
		out[i.Name] = i
	}
	return out
}

// retainedManifests reads job's retained manifests (<job>.<id> keys and <job>.latest).
func (s *system) retainedManifests(job string) []*messages.Manifest {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := natstest.Keys(ctx, s.res.Manifests, job+".*")
	if err != nil {
		s.t.Fatal(err)
	}
	var out []*messages.Manifest
	for _, k := range keys {
		if k == cairnjs.CounterKey(job) {
			continue
		}
		e, err := s.res.Manifests.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // retention moved past it meanwhile
		}
		if err != nil {
			s.t.Fatal(err)
		}
		var m messages.Manifest
		if err := messages.Unmarshal(e.Value(), &m); err != nil {
			s.t.Fatalf("%s: %v", k, err)
		}
		out = append(out, &m)
	}
	return out
}

// checkRetainedReadable fails the test when a retained manifest of job references a
// snapshot object (a whole state, or a base or delta of a chain) that cannot be read back
// with its size.
func (s *system) checkRetainedReadable(job string) {
	s.t.Helper()
	for _, m := range s.retainedManifests(job) {
		for inst, is := range m.Instances {
			for _, ref := range is.Refs() {
				s.checkReadable(job, m.CheckpointID, inst, ref)
			}
		}
	}
}

// checkReadable fails the test when ref, referenced by manifest id, cannot be read back
// with its size, unless the manifest was dropped meanwhile.
func (s *system) checkReadable(job string, id uint64, inst string, ref messages.SnapshotRef) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	data, err := s.snapshots(job).GetBytes(ctx, ref.Object)
	cancel()
	if err != nil {
		// A manifest retention dropped after the listing is no loss (its objects may be
		// half removed, and a read of those waits for its deadline).
		gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, gerr := s.res.Manifests.Get(gctx, cairnjs.ManifestKey(job, id))
		gcancel()
		if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return
		}
		s.t.Fatalf("manifest %d, instance %s: snapshot %s: %v", id, inst, ref.Object, err)
	}
	if uint64(len(data)) != ref.Size {
		s.t.Fatalf("manifest %d, instance %s: snapshot %s has %d bytes, want %d", id, inst, ref.Object, len(data), ref.Size)
	}
}

// TestStorageStaysBounded is acceptance 2 of issue 8: 300 checkpoints at 100 ms with
// retain 2 and changing state, then the interval set to 1 h: once quiet, CAIRN_MANIFESTS
// holds at most 20 messages and the job's snapshot store only the live objects' chunks and
// metadata, and every retained manifest's snapshots are still readable. The marker TTL is
// 1 s here (the product default is 5 s) so that the test does not wait for it. It runs
// in the slow tier: 300 checkpoints at 100 ms and the quiet scan 20 s after take about 55 s.
func TestStorageStaysBounded(t *testing.T) {
	slowTier(t, "300 checkpoints at 100 ms and a quiet scan, about 55 s")
	const job = "bounded"
	s := startSystemWith(t, cairnjs.Options{LeaseTTL: leaseTTL, MarkerTTL: time.Second}, job, "b-0", "b-1")
	s.waitRegistered(job, 2)
	evs := s.events(job)
	stop := s.feed(job, "b-0", "b-1")
	v := s.set(job, `{"interval":"100ms","retain":2}`)
	completed, aborted := 0, 0
	deadline := time.Now().Add(180 * time.Second) // 300 checkpoints take about 30 s; room for a loaded -race run
	for completed < 300 {
		e := next(t, evs, time.Until(deadline), "checkpoint event")
		switch {
		case e.ConfigVersion != v.Version:
		case e.Outcome == messages.Completed:
			completed++
			if completed%25 == 0 {
				s.checkRetainedReadable(job)
			}
		default:
			aborted++
		}
	}
	s.set(job, `{"interval":"1h"}`)
	quietFrom := time.Now()
	stop()
	t.Logf("300 checkpoints completed, %d aborted", aborted)

	// Quiet: markers expire, and the retention pass of its own (20 s after the last one, a
	// full scan) removes what no retained manifest references: the condition must hold
	// after it.
	var manifests, snapshots jetstream.StreamState
	var want uint64
	defer func() {
		if t.Failed() {
			t.Logf("last seen: KV_%s %d messages, %s %d messages (%d for the live objects)",
				cairnjs.ManifestBucket, manifests.Msgs, cairnjs.ObjectStream(cairnjs.SnapshotStore(job)), snapshots.Msgs, want)
		}
	}()
	natstest.Eventually(t, 50*time.Second, "storage did not settle", func() bool {
		manifests = s.streamState("KV_" + cairnjs.ManifestBucket)
		snapshots = s.streamState(cairnjs.ObjectStream(cairnjs.SnapshotStore(job)))
		objects := s.liveObjects(job)
		want = 0
		for _, info := range objects {
			want += uint64(info.Chunks) + 1
		}
		referenced := map[string]bool{}
		for _, m := range s.retainedManifests(job) {
			for _, is := range m.Instances {
				for _, ref := range is.Refs() {
					referenced[ref.Object] = true
				}
			}
		}
		for name := range objects {
			if !referenced[name] {
				return false // an unreferenced object not removed yet
			}
		}
		return manifests.Msgs <= 20 && snapshots.Msgs == want && time.Since(quietFrom) > 22*time.Second
	})
	s.checkRetainedReadable(job)
	t.Logf("quiet: KV_%s %d messages, %s %d messages (%d for the live objects)",
		cairnjs.ManifestBucket, manifests.Msgs, cairnjs.ObjectStream(cairnjs.SnapshotStore(job)), snapshots.Msgs, want)
}

// TestStorageFullAbortsAndRecovers fills a small snapshot store with objects no manifest
// references: the next upload is refused, the checkpoint aborts with storage_full (in the
// event and in status), retention frees the space and checkpoints complete again by
// themselves.
func TestStorageFullAbortsAndRecovers(t *testing.T) {
	const job = "full"
	s := startSystemWith(t, cairnjs.Options{LeaseTTL: leaseTTL, SnapshotMaxBytes: 256 << 10}, job, "f-0")
	s.waitRegistered(job, 1)
	evs := s.events(job)
	s.publish(job, "f-0", 0, 20)
	v := s.set(job, `{"interval":"100ms","retain":2}`)
	nextMatching(t, evs, 10*time.Second, "a completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.ConfigVersion == v.Version && e.Outcome == messages.Completed
	})
	// Pause checkpointing, then fill the store with orphans older than every manifest (as
	// an instance that uploaded and died before acking would leave them) until not even a
	// tiny object fits.
	s.set(job, `{"interval":"1h"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	junk := 0
	for size := 16 << 10; size >= 16; size /= 4 {
		for {
			_, err := s.snapshots(job).PutBytes(ctx, cairnjs.ObjectName(job, 0, fmt.Sprintf("junk-%d", junk), "sim"), make([]byte, size))
			if cairnjs.IsStorageFull(err) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			junk++
		}
	}
	// Change the state, so that the next checkpoint uploads, and resume.
	s.publish(job, "f-0", 20, 20)
	natstest.Eventually(t, 10*time.Second, "operator did not consume the new input", func() bool {
		return s.operatorState(job, "f-0").Position >= 40
	})
	v = s.set(job, `{"interval":"100ms"}`)
	full := nextMatching(t, evs, 10*time.Second, "a storage_full abort", func(e *messages.CheckpointEvent) bool {
		return e.ConfigVersion == v.Version && e.Outcome == messages.Aborted
	})
	if full.Reason != messages.AbortStorageFull {
		t.Fatalf("aborted with %s (%s), want storage_full", full.Reason, full.Detail)
	}
	if st := s.status(job); st.LastAborted == nil || st.LastAborted.Reason != "storage_full" {
		t.Fatalf("status last aborted: %+v, want reason storage_full", st.LastAborted)
	}
	done := nextMatching(t, evs, 20*time.Second, "a completed checkpoint after storage_full", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed
	})
	if done.CheckpointID <= full.CheckpointID || done.Written == 0 {
		t.Fatalf("completed %d (written %d) after storage_full %d", done.CheckpointID, done.Written, full.CheckpointID)
	}
	// The pass that the abort asked for runs beside the checkpoints: the first orphans it
	// removes make room for the next upload, and it may still be removing the others.
	natstest.Eventually(t, 10*time.Second, "orphans still stored after the store was full", func() bool {
		for name := range s.liveObjects(job) {
			if strings.HasPrefix(name, job+"/0/") {
				return false
			}
		}
		return true
	})
	t.Logf("%d orphans filled the store; checkpoint %d aborted with storage_full, %d completed", junk, full.CheckpointID, done.CheckpointID)
}
