package process

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

var three = []string{"counter-0", "counter-1", "counter-2"}

// TestAbsentMemberKeepsItsState is acceptance 1 of issue 7: an instance applies 300 events,
// a checkpoint covers them, it is stopped (SIGTERM, or SIGKILL), its input subject is
// purged, 30 checkpoints complete without it (far more than retain 2), 200 more events
// arrive, and it restarts: its totals are exactly the 500 events. Starting empty, or from
// sequence 1, cannot pass: the first 300 events are gone from the stream.
func TestAbsentMemberKeepsItsState(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGKILL", syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{instances: three})
			ctx := ctxFor(t, 90*time.Second)
			const inst = "counter-1"
			seq, err := s.publish(ctx, inst, 300)
			if err != nil {
				t.Fatal(err)
			}
			s.assertExact(ctx, inst, seq)
			covered, err := s.waitCovered(ctx, inst, seq)
			if err != nil {
				t.Fatal(err)
			}
			_, code, err := s.ops[inst].Signal(tc.sig, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tc.sig == syscall.SIGTERM && code != 0 {
				t.Fatalf("%s exited with code %d after SIGTERM; want 0", inst, code)
			}
			s.purge(ctx, inst)
			seen := s.completions()
			if err := s.waitCompletions(ctx, seen, 30); err != nil {
				t.Fatal(err)
			}
			st, err := s.status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m, ok := member(st, inst)
			if !ok || m.Active || m.Positions[cairnjs.InputStream] < seq {
				t.Errorf("after 30 checkpoints without it, the status shows %s as %+v (found %t); want an absent member with its input position at %d or later (checkpoint %d covered it)",
					inst, m, ok, seq, covered.CheckpointID)
			}
			last, err := s.publish(ctx, inst, 200)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.ops[inst].Start(); err != nil {
				t.Fatal(err)
			}
			if err := s.ops[inst].WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			s.assertExact(ctx, inst, last)
			if got := len(s.published(inst)); got != 500 {
				t.Fatalf("published %d events; want 500", got)
			}
			for _, e := range s.unexpected() {
				t.Errorf("unexpected exit: %s", e)
			}
		})
	}
}

// TestAllKilledRestoreAfterPurge is acceptance 2 of issue 7: every operator is SIGKILLed
// after a checkpoint that covers all of its input, the input is purged, more events
// arrive, and the restarted instances end exact: their state can only come from the
// checkpoint.
func TestAllKilledRestoreAfterPurge(t *testing.T) {
	s := newStack(t, stackOptions{instances: three})
	ctx := ctxFor(t, 90*time.Second)
	last := map[string]uint64{}
	for i, inst := range three {
		seq, err := s.publish(ctx, inst, 100+50*i)
		if err != nil {
			t.Fatal(err)
		}
		last[inst] = seq
	}
	for _, inst := range three {
		s.assertExact(ctx, inst, last[inst])
	}
	for _, inst := range three {
		if _, err := s.waitCovered(ctx, inst, last[inst]); err != nil {
			t.Fatal(err)
		}
	}
	for _, inst := range three {
		if _, err := s.ops[inst].Kill(); err != nil {
			t.Fatal(err)
		}
	}
	for _, inst := range three {
		s.purge(ctx, inst)
		seq, err := s.publish(ctx, inst, 60)
		if err != nil {
			t.Fatal(err)
		}
		last[inst] = seq
	}
	for _, inst := range three {
		if err := s.ops[inst].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var problems []string
	for _, inst := range three {
		if err := s.ops[inst].WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := s.waitApplied(ctx, inst, last[inst])
		if err != nil {
			t.Fatal(err)
		}
		problems = append(problems, s.exact(inst, st)...)
	}
	if problems != nil {
		t.Fatalf("not exact after the restart:\n  %s", strings.Join(problems, "\n  "))
	}
	restarted := time.Now()
	if _, err := s.completedAfter(ctx, restarted); err != nil {
		t.Fatalf("checkpointing did not resume after the restart: %v", err)
	}
	for _, e := range s.unexpected() {
		t.Errorf("unexpected exit: %s", e)
	}
}
