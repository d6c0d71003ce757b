package integration

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
)

// checkpointCall sends a checkpoint request (trigger, list, delete) and decodes a
// successful JSON reply into v; it returns the error code and message of a refusal.
func (s *system) checkpointCall(subject, body string, v any) (code, msg string) {
	s.t.Helper()
	m := natstest.Request(s.t, s.nc, subject, []byte(body), 10*time.Second)
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		var e messages.ErrorBody
		if err := json.Unmarshal(m.Data, &e); err != nil || e.Error == "" {
			s.t.Fatalf("%s %s: error %s with body %q, want {\"error\":...}", subject, body, code, m.Data)
		}
		return code, e.Error
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		s.t.Fatalf("%s %s: reply %q: %v", subject, body, m.Data, err)
	}
	return "", ""
}

// trigger triggers a checkpoint of job (a savepoint when body names one) and returns the
// result, failing the test unless it completed.
func (s *system) trigger(job, body string) messages.CheckpointResult {
	s.t.Helper()
	var r messages.CheckpointResult
	var code, msg string
	// A job whose first instance just registered may not be led yet: 503 until a
	// coordinator takes its lease.
	natstest.Eventually(s.t, 10*time.Second, "a coordinator leads "+job, func() bool {
		code, msg = s.checkpointCall(subjects.CheckpointTrigger(job), body, &r)
		return code != "503"
	})
	if code != "" {
		s.t.Fatalf("trigger %s %s: %s %s", job, body, code, msg)
	}
	if r.Outcome != "completed" {
		s.t.Fatalf("trigger %s %s: %+v, want a completed checkpoint", job, body, r)
	}
	return r
}

// list lists job's checkpoints and savepoints.
func (s *system) list(job string) messages.CheckpointList {
	s.t.Helper()
	var l messages.CheckpointList
	if code, msg := s.checkpointCall(subjects.CheckpointList(job), "", &l); code != "" {
		s.t.Fatalf("list %s: %s %s", job, code, msg)
	}
	return l
}

// startOperatorWith starts a reference operator whose config mutate changes.
func (s *system) startOperatorWith(job, instance string, mutate func(*aggregator.Config)) {
	s.startConn(instance, func(ctx context.Context, nc *nats.Conn) error {
		cfg := aggregator.DefaultConfig(job, instance)
		cfg.Output = subjects.Output(job, instance)
		mutate(&cfg)
		svc, err := aggregator.NewService(cfg, nc, testLog().With().Str("service", instance).Logger())
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}

func TestManualCheckpointRepliesWhenCompleted(t *testing.T) {
	s := startSystem(t, "man", "m-0")
	s.waitRegistered("man", 1)
	s.publish("man", "m-0", 0, 40)
	s.waitApplied("man", "m-0", 40)
	// The default interval (10s) is far off: the reply comes from the manual trigger. The
	// first trigger may wait out 503 until the coordinator leads the job, so only the
	// second one is timed below.
	r := s.trigger("man", "")
	if r.Job != "man" || r.ID == 0 || r.Savepoint != "" || r.Duration == "" || r.Bytes == 0 || r.BytesWritten == 0 ||
		len(r.Participants) != 1 || r.Participants[0] != "m-0" || r.FinishedAt.Before(r.TriggeredAt) {
		t.Fatalf("trigger reply %+v: want job man, an id, a duration, bytes and participant m-0", r)
	}
	if st := s.status("man"); st.LastCompleted == nil || st.LastCompleted.ID != r.ID {
		t.Fatalf("status last completed %+v, want checkpoint %d", st.LastCompleted, r.ID)
	}
	// An empty object is a plain checkpoint too, and the next one gets the next id. The
	// acceptance claim is a reply within 1 s; under -race on a loaded CI machine a whole
	// checkpoint can take longer, so the bound is 5 s, which still tells a reply to the
	// trigger from one that waits for the 10 s interval; the time is logged.
	start := time.Now()
	r2 := s.trigger("man", "{}")
	took := time.Since(start)
	t.Logf("a trigger of a led job replied after %s (acceptance: within 1s)", took)
	if took > 5*time.Second {
		t.Errorf("trigger replied after %s, want well within the 10s interval", took)
	}
	if r2.ID <= r.ID {
		t.Fatalf("second trigger got checkpoint %d after %d", r2.ID, r.ID)
	}
}

func TestCheckpointRequestsAreRefusedSpecifically(t *testing.T) {
	s := startSystem(t, "bad", "b-0")
	s.waitRegistered("bad", 1)
	s.set("nomembers", `{"interval":"1h"}`)
	s.status("nomembers")
	s.trigger("bad", `{"savepoint":"v1"}`)

	cases := []struct {
		name, subject, body, code, says string
	}{
		{"trigger bad job name", "cairn.checkpoint.trigger.b%d", "", "400", "job name"},
		{"trigger unknown job", subjects.CheckpointTrigger("nojob"), "", "404", `unknown job "nojob"`},
		{"trigger job without members", subjects.CheckpointTrigger("nomembers"), "", "404", "has no members"},
		{"trigger empty savepoint name", subjects.CheckpointTrigger("bad"), `{"savepoint":""}`, "400", "savepoint name is empty"},
		{"trigger savepoint name with a dot", subjects.CheckpointTrigger("bad"), `{"savepoint":"a.b"}`, "400", `savepoint name "a.b"`},
		{"trigger savepoint not a string", subjects.CheckpointTrigger("bad"), `{"savepoint":7}`, "400", "savepoint must be a string"},
		{"trigger savepoint null", subjects.CheckpointTrigger("bad"), `{"savepoint":null}`, "400", "savepoint must be a string"},
		{"trigger unknown field", subjects.CheckpointTrigger("bad"), `{"bogus":1}`, "400", `unknown field "bogus"`},
		{"trigger body not an object", subjects.CheckpointTrigger("bad"), `["v2"]`, "400", "JSON object"},
		{"trigger savepoint in use", subjects.CheckpointTrigger("bad"), `{"savepoint":"v1"}`, "409", "savepoint v1 of job bad already exists"},
		{"list bad job name", "cairn.checkpoint.list.b%d", "", "400", "job name"},
		{"list unknown job", subjects.CheckpointList("nojob"), "", "404", `unknown job "nojob"`},
		{"list with a body", subjects.CheckpointList("bad"), `{"savepoint":"v1"}`, "400", "takes no body"},
		{"delete bad job name", "cairn.checkpoint.delete.b%d", `{"savepoint":"v1"}`, "400", "job name"},
		{"delete unknown job", subjects.CheckpointDelete("nojob"), `{"savepoint":"v1"}`, "404", `unknown job "nojob"`},
		{"delete without body", subjects.CheckpointDelete("bad"), "", "400", `{"savepoint":"<name>"}`},
		{"delete without savepoint", subjects.CheckpointDelete("bad"), "{}", "400", "savepoint is required"},
		{"delete bad savepoint name", subjects.CheckpointDelete("bad"), `{"savepoint":"a b"}`, "400", `savepoint name "a b"`},
		{"delete unknown field", subjects.CheckpointDelete("bad"), `{"savepoint":"v1","force":true}`, "400", `unknown field "force"`},
		{"delete unknown savepoint", subjects.CheckpointDelete("bad"), `{"savepoint":"nope"}`, "404", "savepoint nope of job bad does not exist; savepoints: v1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v json.RawMessage
			code, msg := s.checkpointCall(c.subject, c.body, &v)
			if code != c.code || !strings.Contains(msg, c.says) {
				t.Fatalf("%s %s: %s %q, want %s saying %q", c.subject, c.body, code, msg, c.code, c.says)
			}
		})
	}
	if l := s.list("bad"); len(l.Savepoints) != 1 || l.Savepoints[0].Savepoint != "v1" {
		t.Fatalf("after the refused requests the savepoints are %+v, want v1 alone", l.Savepoints)
	}
}

// objectExists reports whether the snapshot store of the object's job (its name's first
// part) holds object name.
func (s *system) objectExists(name string) bool {
	s.t.Helper()
	job, _, _ := strings.Cut(name, "/")
	_, err := s.snapshots(job).GetInfo(context.Background(), name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false
	}
	if err != nil {
		s.t.Fatalf("object %s: %v", name, err)
	}
	return true
}

func TestSavepointOutlivesRetentionAndKeepsItsInput(t *testing.T) {
	const job = "sp"
	s := startSystem(t, job, "s-0")
	s.waitRegistered(job, 1)
	// No scheduled checkpoint: every retention pass follows a request of this test.
	s.set(job, `{"retain":2,"interval":"1h"}`)
	s.publish(job, "s-0", 0, 100)
	s.waitApplied(job, "s-0", 100)
	sp := s.trigger(job, `{"savepoint":"before-upgrade"}`)
	if sp.Savepoint != "before-upgrade" {
		t.Fatalf("savepoint reply %+v: want savepoint before-upgrade", sp)
	}
	l := s.list(job)
	if len(l.Savepoints) != 1 || l.Savepoints[0].ID != sp.ID {
		t.Fatalf("savepoints %+v, want before-upgrade (checkpoint %d)", l.Savepoints, sp.ID)
	}
	held := l.Savepoints[0].Instances["s-0"]
	pos := held.Positions[cairnjs.InputStream]
	if pos == 0 || held.Object == "" {
		t.Fatalf("savepoint holds %+v of s-0, want an object and a position in %s", held, cairnjs.InputStream)
	}
	// s-1 joins after the savepoint, which does not hold it: its input is trimmed below the
	// oldest retained checkpoint, which shows when a retention pass (and its trim) ran.
	s.startOperator(job, "s-1")
	s.waitRegistered(job, 2)
	var last messages.CheckpointResult
	for i := range 20 {
		s.publish(job, "s-0", 100+5*i, 5)
		s.publish(job, "s-1", 5*i, 5)
		s.waitApplied(job, "s-0", int64(105+5*i))
		s.waitApplied(job, "s-1", int64(5+5*i))
		last = s.trigger(job, "")
	}
	// Retention is paced (docs/semantics.md, Retention): after the last of these
	// completions its pass may come up to 10 s later (retainAfter), and then takes its
	// time on a loaded machine.
	var oldest messages.CheckpointInfo
	natstest.Eventually(t, 30*time.Second, "retention keeps the 2 newest checkpoints and trims s-1's input below the older", func() bool {
		l = s.list(job)
		if len(l.Checkpoints) != 2 || l.Checkpoints[0].ID != last.ID {
			return false
		}
		oldest = l.Checkpoints[1]
		return s.inputLeft(subjects.Input(job, "s-1")) >= oldest.Instances["s-1"].Positions[cairnjs.InputStream]
	})
	if len(l.Savepoints) != 1 || l.Savepoints[0].Savepoint != "before-upgrade" || l.Savepoints[0].ID != sp.ID {
		t.Fatalf("after 20 checkpoints at retain 2 the savepoints are %+v, want before-upgrade (checkpoint %d)", l.Savepoints, sp.ID)
	}
	if !s.objectExists(held.Object) {
		t.Fatalf("retention deleted %s, which savepoint before-upgrade references", held.Object)
	}
	if first := s.inputLeft(subjects.Input(job, "s-0")); first > pos+1 || first == 0 {
		t.Fatalf("s-0's input starts at %d: trimmed past %d, which savepoint before-upgrade holds", first, pos)
	}
	st := s.status(job)
	if len(st.Savepoints) != 1 || st.Savepoints[0].Instances["s-0"].Positions[cairnjs.InputStream] != pos ||
		st.Savepoints[0].Instances["s-0"].Behind[cairnjs.InputStream] == 0 {
		t.Fatalf("status savepoints %+v: want before-upgrade holding s-0 at %d, behind the newest checkpoint", st.Savepoints, pos)
	}

	var del messages.SavepointDeleted
	if code, msg := s.checkpointCall(subjects.CheckpointDelete(job), `{"savepoint":"before-upgrade"}`, &del); code != "" {
		t.Fatalf("delete: %s %s", code, msg)
	}
	if del.Savepoint != "before-upgrade" || del.ID != sp.ID {
		t.Fatalf("delete reply %+v, want savepoint before-upgrade of checkpoint %d", del, sp.ID)
	}
	natstest.Eventually(t, 10*time.Second, "the deleted savepoint's object removed and s-0's input trimmed past it", func() bool {
		return !s.objectExists(held.Object) && s.inputLeft(subjects.Input(job, "s-0")) > pos+1
	})
	if l := s.list(job); len(l.Savepoints) != 0 {
		t.Fatalf("savepoints after the delete: %+v", l.Savepoints)
	}
	if code, _ := s.checkpointCall(subjects.CheckpointDelete(job), `{"savepoint":"before-upgrade"}`, new(json.RawMessage)); code != "404" {
		t.Fatalf("deleting it again: %q, want 404", code)
	}
	// The name is free again.
	if r := s.trigger(job, `{"savepoint":"before-upgrade"}`); r.ID <= last.ID {
		t.Fatalf("savepoint taken again as checkpoint %d, not after %d", r.ID, last.ID)
	}
}

func TestRestoreFromSavepointReappliesWhatFollows(t *testing.T) {
	const job = "rf"
	s := startSystem(t, job, "r-0")
	s.waitRegistered(job, 1)
	s.set(job, `{"retain":1}`)
	want := s.publish(job, "r-0", 0, 100)
	s.waitApplied(job, "r-0", 100)
	sp := s.trigger(job, `{"savepoint":"v1"}`)
	// More input and newer checkpoints, which retention alone would keep.
	want = add(want, s.publish(job, "r-0", 100, 60))
	s.waitApplied(job, "r-0", 160)
	s.trigger(job, "")
	s.trigger(job, "")
	s.stop("r-0")
	s.startOperatorWith(job, "r-0", func(c *aggregator.Config) { c.RestoreFrom = "v1" })
	// Restored at the savepoint, it applies the 60 records after it again: totals exact.
	s.wantExact(job, "r-0", want)
	var info messages.OperatorInfo
	natstest.Eventually(t, 10*time.Second, "info of r-0", func() bool {
		m := s.request(subjects.OperatorInfo(job, "r-0"), "")
		return m.Header.Get("Nats-Service-Error-Code") == "" && json.Unmarshal(m.Data, &info) == nil
	})
	if info.RestoredCheckpoint != sp.ID || info.RestoredFrom != "savepoint v1" || info.Stats.Applied != 60 {
		t.Fatalf("info %+v: want checkpoint %d restored from savepoint v1 and exactly 60 records applied since", info, sp.ID)
	}
	if info.Position == 0 {
		t.Fatalf("info position 0 after applying 60 records")
	}
}
