package process

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// garbageRecords is one more than CAIRN_CONFIG keeps per subject: enough to push every
// valid event of a job out of the stream.
const garbageRecords = 10001

// TestGarbageCannotTakeConfigVersionsBack is acceptance 5 of issue 13: after version N (3)
// of a job, 10 001 garbage records on its config events subject push every valid event out
// of CAIRN_CONFIG. `cairn.config.get.<job>` still answers version N within 1 s; a
// coordinator process restarted afterwards runs version N (status shows it applied, with
// its interval, and checkpoints complete under it); the next set gets version N+1, which
// the coordinator applies; the history still ends with the newest version.
func TestGarbageCannotTakeConfigVersionsBack(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}})
	ctx := ctxFor(t, 120*time.Second)
	var v messages.ConfigView
	if err := s.request(ctx, subjects.ConfigSet(s.job), []byte(`{"interval":"300ms"}`), &v); err != nil {
		t.Fatal(err)
	}
	if err := s.request(ctx, subjects.ConfigSet(s.job), []byte(`{"interval":"350ms","retain":3}`), &v); err != nil {
		t.Fatal(err)
	}
	n := v.Version
	if n != 3 {
		t.Fatalf("third set answered version %d, want 3", n)
	}

	start := time.Now()
	events := subjects.ConfigEvents(s.job)
	garbage := make([][]byte, garbageRecords)
	for i := range garbage {
		garbage[i] = fmt.Appendf(nil, "garbage %d", i)
	}
	if _, err := natstest.Publish(ctx, s.js, events, garbage); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d garbage records published in %s", garbageRecords, time.Since(start).Round(time.Millisecond))
	first, err := s.res.Config.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := configlog.Decode(first.Data, s.job); err == nil {
		t.Fatalf("a valid event is still on %s at sequence %d: the garbage did not push them out", events, first.Sequence)
	}

	// One request, timed: no retry may hide a slow answer.
	start = time.Now()
	reply, err := s.nc.RequestWithContext(ctx, subjects.ConfigGet(s.job), nil)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	var got messages.ConfigView
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" || json.Unmarshal(reply.Data, &got) != nil {
		t.Fatalf("get after the garbage: %s %s", code, reply.Data)
	}
	t.Logf("get after %d garbage records answered version %d in %s (acceptance: under 1s)", garbageRecords, got.Version, took.Round(time.Microsecond))
	if got.Version != n || got.Interval != "350ms" || got.Retain != 3 {
		t.Fatalf("get after the garbage: %+v, want version %d (350ms, retain 3)", got, n)
	}
	if took > time.Second {
		t.Fatalf("get took %s, want under 1s", took)
	}

	start = time.Now()
	var hist messages.ConfigHistory
	if err := s.request(ctx, subjects.ConfigHistory(s.job), nil, &hist); err != nil {
		t.Fatal(err)
	}
	t.Logf("history after the garbage answered in %s: %d versions, truncated %t", time.Since(start).Round(time.Millisecond), len(hist.Versions), hist.Truncated)
	if l := len(hist.Versions); l == 0 || hist.Versions[l-1].Version != n || !hist.Truncated {
		t.Fatalf("history after the garbage: %+v, want it to end with version %d, truncated", hist, n)
	}

	if err := s.coordinator.Terminate(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := s.coordinator.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := s.coordinator.CoordinatorID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var st messages.Status
	if err := proctest.Poll(ctx, 20*time.Millisecond, fmt.Sprintf("the restarted coordinator to apply version %d", n), func() (bool, error) {
		var err error
		st, err = s.status(ctx)
		return err == nil && st.Holder == id && st.Config.Version == n && st.AppliedAt != nil, nil
	}); err != nil {
		t.Fatalf("%v; last status: %+v", err, st)
	}
	if st.EffectiveInterval != "350ms" || st.Config.Retain != 3 {
		t.Fatalf("restarted coordinator runs interval %s retain %d, want 350ms and 3", st.EffectiveInterval, st.Config.Retain)
	}
	done, err := s.completedAfter(ctx, restarted)
	if err != nil {
		t.Fatal(err)
	}
	if done.ConfigVersion != n {
		t.Fatalf("checkpoint %d completed under version %d after the restart, want %d", done.CheckpointID, done.ConfigVersion, n)
	}

	if err := s.request(ctx, subjects.ConfigSet(s.job), []byte(`{"interval":"250ms"}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version != n+1 || v.Retain != 3 {
		t.Fatalf("set after the garbage answered %+v, want version %d on top of version %d", v, n+1, n)
	}
	if err := proctest.Poll(ctx, 20*time.Millisecond, fmt.Sprintf("the coordinator to apply version %d", n+1), func() (bool, error) {
		var err error
		st, err = s.status(ctx)
		return err == nil && st.Config.Version == n+1 && st.EffectiveInterval == "250ms", nil
	}); err != nil {
		t.Fatalf("%v; last status: %+v", err, st)
	}
	if err := s.request(ctx, subjects.ConfigHistory(s.job), nil, &hist); err != nil {
		t.Fatal(err)
	}
	if l := len(hist.Versions); l == 0 || hist.Versions[l-1].Version != n+1 {
		t.Fatalf("history after the set: %+v, want it to end with version %d", hist, n+1)
	}
}
