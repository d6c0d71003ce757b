package process

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/proctest"
)

// TestDuplicateInstance is acceptance 3 of issue 7: a second process starts with an
// instance id already running while events flow. Within 15 s exactly one of the two has
// exited non-zero, with an ERROR naming the incarnation that replaced it; checkpoints keep
// completing (at 200 ms, at least 5 in the next 3 s); the survivor's totals are exact. The
// input is purged below the oldest retained checkpoint before the second process starts,
// so a survivor that replayed from sequence 1 could not be exact.
func TestDuplicateInstance(t *testing.T) {
	s := newStack(t, stackOptions{instances: three})
	ctx := ctxFor(t, 90*time.Second)
	const inst = "counter-0"
	stop := s.feed(ctx, inst, 5*time.Millisecond, 1)
	defer stop()
	if _, err := s.waitCovered(ctx, inst, 200); err != nil {
		t.Fatal(err)
	}
	if first, err := s.trimBelowRetained(ctx, inst); err != nil || first <= 1 {
		t.Fatalf("trim the input of %s: first sequence %d, %v", inst, first, err)
	}

	orig := s.ops[inst]
	dup := s.operatorProc(inst+"-duplicate", inst, false)
	s.extra = append(s.extra, dup)
	started := time.Now()
	if err := dup.Start(); err != nil {
		t.Fatal(err)
	}
	var loser, survivor *proctest.Proc
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case <-orig.Done():
		loser, survivor = orig, dup
	case <-dup.Done():
		loser, survivor = dup, orig
	case <-timer.C:
		t.Fatalf("15 s after a second process started with instance id %s, both still run", inst)
	}
	t.Logf("%s exited %s after the second process started", loser.Name, time.Since(started).Round(time.Millisecond))
	if code, err := loser.Exit(); code == 0 {
		t.Errorf("%s exited with code 0 (%v); want non-zero", loser.Name, err)
	}
	if err := survivor.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if !survivor.Running() {
		t.Fatalf("both processes of instance %s exited", inst)
	}
	if inc := survivor.Incarnation(); !namesIncarnation(loser.Lines(), inc) {
		t.Errorf("%s logged no ERROR naming the incarnation that replaced it (%s); its last lines:\n%s", loser.Name, inc, loser.Tail(8))
	}

	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	seen := s.completions()
	err := s.waitCompletions(wctx, seen, 5)
	cancel()
	if err != nil {
		t.Errorf("fewer than 5 checkpoints completed in the 3 s after the duplicate exited (%d): %v", s.completions()-seen, err)
	}

	last, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	if !survivor.Running() {
		t.Errorf("the survivor %s exited", survivor.Name)
	}
	for _, e := range s.unexpected() {
		if !strings.HasPrefix(e, loser.Name+" ") {
			t.Errorf("unexpected exit: %s", e)
		}
	}
}

// namesIncarnation reports whether an error-level log line (JSON, or the command's final
// "cairn operator: …" line) names incarnation.
func namesIncarnation(lines []string, incarnation string) bool {
	if incarnation == "" {
		return false
	}
	for _, l := range lines {
		if !strings.Contains(l, incarnation) {
			continue
		}
		if strings.HasPrefix(l, "cairn operator:") {
			return true
		}
		var f struct {
			Level       string `json:"level"`
			Incarnation string `json:"incarnation"`
		}
		if json.Unmarshal([]byte(l), &f) == nil && f.Level == "error" {
			// The line's own incarnation field is the loser's; the survivor's must be
			// named elsewhere in it.
			if f.Incarnation != incarnation || strings.Count(l, incarnation) > 1 {
				return true
			}
		}
	}
	return false
}
