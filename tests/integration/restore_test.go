package integration

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// add merges b into a.
func add(a, b map[string]messages.KeyTotals) map[string]messages.KeyTotals {
	out := maps.Clone(a)
	for k, v := range b {
		t := out[k]
		t.Count += v.Count
		t.Sum += v.Sum
		out[k] = t
	}
	return out
}

func TestOperatorRestartRestoresExactlyOnce(t *testing.T) {
	s := startSystem(t, "ex", "w-0", "w-1")
	s.waitRegistered("ex", 2)
	evs := s.events("ex")
	want := s.publish("ex", "w-0", 0, 150)
	s.publish("ex", "w-1", 0, 50)
	v := s.set("ex", `{"interval":"200ms"}`)
	nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	// More input after the checkpoint, then a stop: the restarted instance must replay
	// exactly what its snapshot does not hold.
	want = add(want, s.publish("ex", "w-0", 150, 100))
	s.waitApplied("ex", "w-0", 250)
	s.stop("w-0")
	// The coordinator trims w-0's input below its oldest retained checkpoint (which holds
	// w-0's state of checkpoint 1, carried forward). Once events are gone from the start
	// of the subject, a restart that replayed the input from what is left instead of
	// restoring could not end exact.
	s.waitInputTrimmed("ex", "w-0", 1)
	want = add(want, s.publish("ex", "w-0", 250, 120))
	s.startOperator("ex", "w-0")
	s.wantExact("ex", "w-0", want)
	// And again while checkpoints keep running under the restarted incarnation.
	nextMatching(t, evs, 10*time.Second, "completed checkpoint after the restart", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed
	})
	want = add(want, s.publish("ex", "w-0", 370, 30))
	s.stop("w-0")
	s.startOperator("ex", "w-0")
	s.wantExact("ex", "w-0", want)
}

func sumCount(keys map[string]messages.KeyTotals) int64 {
	var n int64
	for _, v := range keys {
		n += v.Count
	}
	return n
}

func TestOutputsAreExactlyOnceAcrossACrash(t *testing.T) {
	s := startSystem(t, "out1", "o-0")
	s.waitRegistered("out1", 1)
	evs := s.events("out1")
	want := s.publish("out1", "o-0", 0, 80)
	s.waitApplied("out1", "o-0", 80)
	v := s.set("out1", `{"interval":"150ms"}`)
	nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	s.set("out1", `{"interval":"1h"}`) // no checkpoint holds what comes next
	// The coordinator trims the input below the checkpoint's position (80): a restart
	// that replayed from the start instead of restoring could not end exact.
	s.waitInputTrimmed("out1", "o-0", 1)
	want = add(want, s.publish("out1", "o-0", 80, 70))
	s.waitApplied("out1", "o-0", 150)
	// A crash after the outputs of events 81-150 were published: the restored instance
	// applies them again and publishes the same message ids, which the stream drops.
	s.crash("o-0")
	s.startOperator("out1", "o-0")
	s.wantExact("out1", "o-0", want)
	info, err := s.res.Output.Info(context.Background(), jetstream.WithSubjectFilter(subjects.Output("out1", "o-0")))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects[subjects.Output("out1", "o-0")]; got != 150 {
		t.Fatalf("%d outputs stored for 150 input events", got)
	}
}

// waitInputTrimmed waits until instance's input subject starts past sequence past: the
// coordinator trimmed it.
func (s *system) waitInputTrimmed(job, instance string, past uint64) {
	s.t.Helper()
	subject := subjects.Input(job, instance)
	natstest.Eventually(s.t, 10*time.Second, fmt.Sprintf("%s trimmed past sequence %d", subject, past), func() bool {
		return s.inputLeft(subject) > past
	})
}
