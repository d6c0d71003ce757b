package process

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// logLine is the part of a service's JSON log line these tests read.
type logLine struct {
	Level      string `json:"level"`
	Message    string `json:"message"`
	Suppressed uint64 `json:"suppressed"`
}

// warnings returns p's warning and error lines, from the (n+1)-th line of its current run
// on.
func warnings(p *proctest.Proc, n int) []logLine {
	var out []logLine
	lines := p.Lines()
	for _, l := range lines[min(n, len(lines)):] {
		var ll logLine
		if json.Unmarshal([]byte(l), &ll) == nil && (ll.Level == "warn" || ll.Level == "error") {
			out = append(out, ll)
		}
	}
	return out
}

// TestGarbageAcksMakeAHandfulOfLines is acceptance 4 of issue 15 (noise): 2 000 garbage
// acks (1 000 that do not decode, 1 000 whose job is not their subject's) make the
// coordinator log at most 2 lines of each kind, the second saying how many it suppressed;
// checkpointing goes on.
func TestGarbageAcksMakeAHandfulOfLines(t *testing.T) {
	s := newStack(t, stackOptions{instances: []string{"counter-0"}})
	ctx := ctxFor(t, 60*time.Second)
	from := len(s.coordinator.Lines())
	foreign, err := messages.Marshal(&messages.Ack{Schema: messages.SchemaVersion, Job: "another-job", CheckpointID: 1, Instance: "x", Incarnation: "y",
		Kind: messages.AckDone, Snapshot: messages.SnapshotRef{Object: "another-job/1/x", Size: 1, Digest: "SHA-256=x"}})
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	for i := range 1000 {
		if err := s.nc.Publish(subjects.Ack(s.job), fmt.Appendf(nil, "garbage %d", i)); err != nil {
			t.Fatal(err)
		}
		if err := s.nc.Publish(subjects.Ack(s.job), foreign); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The first line of each kind at once, the count of the others when the coordinator's
	// 10 s period ends.
	var lines []logLine
	counted := map[string]uint64{}
	if err := proctest.Poll(ctx, 50*time.Millisecond, "the coordinator to account for every garbage ack", func() (bool, error) {
		lines = warnings(s.coordinator, from)
		clear(counted)
		for _, l := range lines {
			switch {
			case !strings.HasPrefix(l.Message, "ack dropped"):
			case l.Suppressed > 0: // the count of those suppressed after the first
				counted[l.Message] += l.Suppressed
			default:
				counted[l.Message]++
			}
		}
		return len(counted) == 2 && counted["ack dropped: cannot decode"] == 1000 && counted["ack dropped: its job or instance does not match its subject"] == 1000, nil
	}); err != nil {
		t.Fatalf("%v: counted %v in %d warning lines: %+v", err, counted, len(lines), lines)
	}
	t.Logf("2 000 garbage acks: %d warning lines within %s: %+v", len(lines), time.Since(sent).Round(100*time.Millisecond), lines[:min(len(lines), 6)])
	if len(lines) > 4 {
		t.Fatalf("%d warning lines for 2 000 garbage acks, want at most 4", len(lines))
	}
	if _, err := s.completedAfter(ctx, time.Now()); err != nil {
		t.Fatalf("checkpointing stopped after the garbage: %v", err)
	}
}

// TestPersistentStorageFullRaisesAnAlarm is acceptance 4 of issue 15 (alarm): the job's
// snapshot store (given a small limit by the coordinator) kept full by objects that are not
// the job's (which its retention never frees)
// makes every checkpoint abort with storage_full; with tolerable_failures at its default
// (-1, never failed) the fifth in a row raises the job's alarm, in status and as an event
// on cairn.checkpoints.<job>.alarms; raising the store's limit lets a checkpoint
// complete, which clears it.
func TestPersistentStorageFullRaisesAnAlarm(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}, coordinatorArgs: []string{"--snapshot-max-bytes", "262144"}})
	ctx := ctxFor(t, 90*time.Second)
	stopFeed := s.feed(ctx, inst, 50*time.Millisecond, 2) // every checkpoint has new state to upload

	// Keep the job's store full with objects that are not the job's until told to stop.
	store, err := s.js.ObjectStore(ctx, cairnjs.SnapshotStore(s.job))
	if err != nil {
		t.Fatal(err)
	}
	fillCtx, stopFill := context.WithCancel(ctx)
	var fill sync.WaitGroup
	fill.Go(func() {
		junk := 0
		for size := 16 << 10; fillCtx.Err() == nil; size = max(size/4, 16) {
			_, err := store.PutBytes(fillCtx, cairnjs.ObjectName("junk", 0, fmt.Sprintf("j-%d", junk), "sim"), make([]byte, size))
			switch {
			case err == nil:
				junk++
				size *= 4 // it fitted: try the same size again
			case cairnjs.IsStorageFull(err) && size == 16:
				t := time.NewTimer(20 * time.Millisecond)
				select {
				case <-fillCtx.Done():
				case <-t.C:
				}
				t.Stop()
				size = 64 // and keep trying small objects
			case !cairnjs.IsStorageFull(err):
				return
			}
		}
	})

	var st messages.Status
	if err := proctest.Poll(ctx, 50*time.Millisecond, "the storage_full alarm in status", func() (bool, error) {
		var err error
		st, err = s.status(ctx)
		return len(st.Alarms) > 0, err
	}); err != nil {
		t.Fatal(err)
	}
	if a := st.Alarms[0]; len(st.Alarms) != 1 || a.Kind != messages.AlarmAbortsRepeated || a.Reason != "storage_full" || a.Count < 5 ||
		st.Failed || st.Config.TolerableFailures != -1 {
		t.Fatalf("alarms %+v (failed %v, tolerable_failures %d), want aborts_repeated storage_full after at least 5 aborts, the job not failed under -1",
			st.Alarms, st.Failed, st.Config.TolerableFailures)
	}
	raised, err := s.lastAlarm(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if raised.Kind != messages.AlarmAbortsRepeated || raised.State != messages.AlarmRaised || raised.Reason != messages.AbortStorageFull ||
		raised.Count != 5 || raised.Checkpoint > st.Alarms[0].Checkpoint {
		t.Fatalf("alarm event %+v, want aborts_repeated raised, storage_full × 5 (status: %+v)", raised, st.Alarms)
	}
	t.Logf("alarm raised at checkpoint %d: %+v", raised.Checkpoint, st.Alarms[0])

	stopFill()
	fill.Wait()
	// What an administrator does (docs/failure-model.md, storage bounds): raise the limit.
	stream, err := s.js.Stream(ctx, cairnjs.ObjectStream(cairnjs.SnapshotStore(s.job)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxBytes = 64 << 20
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("raise the snapshot store's limit: %v", err)
	}
	if err := proctest.Poll(ctx, 50*time.Millisecond, "the alarm cleared by a completed checkpoint", func() (bool, error) {
		var err error
		st, err = s.status(ctx)
		return len(st.Alarms) == 0 && st.LastCompleted != nil && st.LastCompleted.ID > raised.Checkpoint, err
	}); err != nil {
		t.Fatalf("%v (alarms %+v)", err, st.Alarms)
	}
	cleared, err := s.lastAlarm(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cleared.State != messages.AlarmCleared || cleared.Reason != messages.AbortStorageFull || cleared.Count < 5 || cleared.Checkpoint <= raised.Checkpoint {
		t.Fatalf("alarm event %+v after the completion, want cleared storage_full", cleared)
	}
	if _, err := stopFeed(); err != nil {
		t.Fatal(err)
	}
}

// lastAlarm reads the newest alarm event of the job from CAIRN_CHECKPOINTS.
func (s *stack) lastAlarm(ctx context.Context) (messages.AlarmEvent, error) {
	var e messages.AlarmEvent
	raw, err := s.res.Checkpoints.GetLastMsgForSubject(ctx, subjects.Alarms(s.job))
	if err != nil {
		return e, fmt.Errorf("the last alarm event: %w", err)
	}
	return e, messages.Unmarshal(raw.Data, &e)
}
