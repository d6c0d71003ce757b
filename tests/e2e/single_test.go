//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/loadgen"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// job is the job of the compose stacks' operators.
const job = "demo"

func TestSingleNode(t *testing.T) {
	requireDocker(t)
	s := startStack(t, false)
	s.waitCompleted(t, 0, 90*time.Second)

	t.Run("micro ls lists the services", func(t *testing.T) {
		out := s.admin(t, "micro", "ls")
		for _, svc := range []string{"cairn-config", "cairn-coordinator", "cairn-operator"} {
			if !strings.Contains(out, svc) {
				t.Errorf("nats micro ls does not list %s:\n%s", svc, out)
			}
		}
	})

	t.Run("anonymous connect fails", func(t *testing.T) {
		out, err := s.natsAs("", "pub", "cairn.config.set."+job, `{"interval":"100ms"}`)
		if err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			t.Fatalf("anonymous publish: err = %v, out = %q; want an Authorization Violation", err, out)
		}
	})

	t.Run("a client without the CA is refused", func(t *testing.T) {
		// The admin's own credential, but the server's certificate cannot be verified: the
		// TLS handshake fails before any credential is sent.
		stdout, stderr, err := s.runNatsCA(admin, false, "req", "cairn.status."+job, "")
		if err == nil || !strings.Contains(stderr+stdout, "certificate signed by unknown authority") {
			t.Fatalf("without the CA: err = %v, output %s%s; want the server's certificate refused", err, stderr, stdout)
		}
	})

	t.Run("barrier cadence follows the interval", func(t *testing.T) {
		barriers := s.barriers(t)
		for _, tc := range []struct {
			interval  string
			want, tol time.Duration
			gaps      int
		}{
			{interval: "500ms", want: 500 * time.Millisecond, tol: 50 * time.Millisecond, gaps: 12},
			{interval: "3s", want: 3 * time.Second, tol: 150 * time.Millisecond, gaps: 4},
		} {
			v := s.setConfig(t, admin, fmt.Sprintf(`{"interval":%q}`, tc.interval))
			if v.Interval != tc.interval {
				t.Fatalf("set interval %s: reply says %s", tc.interval, v.Interval)
			}
			st := s.waitApplied(t, v.Version)
			if st.Config.Interval != tc.interval || st.AppliedAt == nil {
				t.Fatalf("status after applying version %d: interval %s, applied_at %v", v.Version, st.Config.Interval, st.AppliedAt)
			}
			gaps := collectGaps(t, barriers, v.Version, tc.gaps, time.Duration(tc.gaps+4)*tc.want+20*time.Second)
			med := median(gaps)
			t.Logf("interval %s (version %d): median gap %s over %d gaps %v", tc.interval, v.Version, med, len(gaps), gaps)
			if med < tc.want-tc.tol || med > tc.want+tc.tol {
				t.Errorf("interval %s: median barrier gap %s, want %s ± %s", tc.interval, med, tc.want, tc.tol)
			}
		}
	})

	t.Run("operator is denied config and stream changes", func(t *testing.T) {
		before := s.getConfig(t)
		configSeq := s.streamLastSeq(t, "CAIRN_CONFIG")
		// A subject no member reads, so the coordinator never trims it: a purge that got
		// through would be seen there.
		const probe = "cairn.input." + job + ".e2e-probe"
		s.admin(t, "pub", probe, `{"key":"probe","value":1}`, "-J")
		// The CLI prints the server's permissions violation; a denied request still exits 0,
		// because the CLI waits for a reply that never comes.
		const violation = `Permissions Violation for Publish to "`
		denied := []struct {
			name string
			args []string
			want string
		}{
			{"set config", []string{"req", "cairn.config.set." + job, `{"interval":"100ms"}`}, "cairn.config.set." + job},
			{"publish a config event", []string{"pub", "cairn.config.events." + job, `{"interval":"100ms"}`}, "cairn.config.events." + job},
			{"publish a config head", []string{"pub", "cairn.config.events." + job + ".head", `{"interval":"100ms"}`}, "cairn.config.events." + job + `.head"`},
			{"purge the input stream", []string{"stream", "purge", "CAIRN_INPUT", "--subject", probe, "-f"}, "$JS.API.STREAM.PURGE.CAIRN_INPUT"},
			{"purge the config stream", []string{"stream", "purge", "CAIRN_CONFIG", "-f"}, "$JS.API.STREAM."},
			{"delete the checkpoint stream", []string{"stream", "rm", "CAIRN_CHECKPOINTS", "-f"}, "$JS.API.STREAM."},
			{"update the input stream", []string{"stream", "edit", "CAIRN_INPUT", "--max-msgs", "10", "-f"}, "$JS.API.STREAM.UPDATE.CAIRN_INPUT"},
			{"ack for another instance", []string{"pub", "cairn.ack." + job + ".counter-1", "x"}, "cairn.ack." + job + `.counter-1"`},
			{"send a barrier", []string{"pub", "cairn.barrier." + job, "x"}, "cairn.barrier." + job + `"`},
			{"register as another instance", []string{"pub", "$KV.CAIRN_LEASES.instance." + job + ".counter-1", "x"}, "$KV.CAIRN_LEASES.instance." + job + `.counter-1"`},
		}
		for _, d := range denied {
			stdout, stderr, _ := s.runNats(operator, d.args...)
			if !strings.Contains(stderr, violation+d.want) {
				t.Errorf("operator %s: want %s%s..., got:\n%s%s", d.name, violation, d.want, stderr, stdout)
			}
		}
		after := s.getConfig(t)
		if after.Version != before.Version || after.Interval != before.Interval {
			t.Errorf("config in force changed from version %d (%s) to %d (%s)", before.Version, before.Interval, after.Version, after.Interval)
		}
		if seq := s.streamLastSeq(t, "CAIRN_CONFIG"); seq != configSeq {
			t.Errorf("CAIRN_CONFIG last sequence moved from %d to %d", configSeq, seq)
		}
		if n := s.subjectCounts(t, "CAIRN_INPUT")[probe]; n != 1 {
			t.Errorf("CAIRN_INPUT holds %d messages on %s after the denied purge, want 1", n, probe)
		}
	})

	t.Run("killed operator restores exactly", func(t *testing.T) {
		const instance = "counter-0"
		id := s.container(t, instance)
		done := s.waitCompleted(t, 0, time.Minute)
		killed := time.Now()
		s.run(t, time.Minute, "docker", "kill", id)
		eventually(t, 30*time.Second, instance+" stops", func() error {
			if h := s.health(t, id); strings.HasPrefix(h, "running") {
				return fmt.Errorf("%s is %s", instance, h)
			}
			return nil
		})
		var prior messages.Status
		eventually(t, 30*time.Second, "status from the lease holder", func() (err error) {
			prior, err = s.status()
			return err
		})
		s.run(t, time.Minute, "docker", "start", id)
		eventually(t, 60*time.Second, instance+" healthy again", func() error {
			if h := s.health(t, id); h != "running healthy" {
				return fmt.Errorf("%s is %s", instance, h)
			}
			return nil
		})
		restored := restoredCheckpoint(t, s.run(t, time.Minute, "docker", "logs", "--since", killed.Format(time.RFC3339Nano), id))
		if restored < done.ID || prior.LastCompleted != nil && slices.Contains(prior.LastCompleted.Participants, instance) && restored != prior.LastCompleted.ID {
			t.Errorf("%s restored checkpoint %d; checkpoint %d had completed before the kill and %+v was the latest before the restart", instance, restored, done.ID, prior.LastCompleted)
		}
		// Freeze the input, let the operator catch up, and check its state against what the
		// load generator published (the input stream is trimmed, so it no longer holds it
		// all: a replay from its start would come out short).
		s.run(t, time.Minute, "docker", "stop", s.container(t, "loadgen"))
		subject := "cairn.input." + job + "." + instance
		last := s.lastSeqFor(t, "CAIRN_INPUT", subject)
		var st messages.OperatorState
		eventually(t, 60*time.Second, instance+" reaches the end of its input", func() error {
			out, err := s.natsAs(admin, "req", "cairn.op."+job+"."+instance+".state", "", "--raw")
			if err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				return fmt.Errorf("state reply %q: %w", out, err)
			}
			if st.Position != last {
				return fmt.Errorf("position %d, last input %d", st.Position, last)
			}
			return nil
		})
		want, n := s.publishedTotals(t, subject)
		if st.Rejected != 0 {
			t.Errorf("%s rejected %d events", instance, st.Rejected)
		}
		if len(st.Keys) != len(want) {
			t.Errorf("%s has %d keys, its input %d", instance, len(st.Keys), len(want))
		}
		for k, w := range want {
			if got := st.Keys[k]; got != w {
				t.Errorf("key %s: state count %d sum %d, input count %d sum %d", k, got.Count, got.Sum, w.Count, w.Sum)
			}
		}
		t.Logf("%s restored checkpoint %d and replayed to position %d: %d keys over %d events match what the load generator published", instance, restored, st.Position, len(want), n)
	})
}

// restoredCheckpoint returns the checkpoint an operator's JSON log says it restored.
func restoredCheckpoint(t *testing.T, logs string) uint64 {
	t.Helper()
	for l := range strings.Lines(logs) {
		var e struct {
			Message    string `json:"message"`
			Checkpoint uint64 `json:"checkpoint"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Message == "state restored" {
			return e.Checkpoint
		}
	}
	t.Fatalf("no \"state restored\" line in the operator's log after its restart:\n%s", logs)
	return 0
}

// status returns the job's status from cairn.status.<job>, as the job's lease holder sees it.
func (s *stack) status() (messages.Status, error) {
	var st messages.Status
	out, err := s.natsAs(admin, "req", "cairn.status."+job, "", "--raw")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status reply %q: %w", out, err)
	}
	if st.Coordinator != st.Holder {
		return st, fmt.Errorf("status answered by coordinator %s, not by the lease holder %s", st.Coordinator, st.Holder)
	}
	return st, nil
}

// waitCompleted waits until the newest completed checkpoint is later than after and every
// instance took part, and returns it.
func (s *stack) waitCompleted(t *testing.T, after uint64, timeout time.Duration) messages.CompletedCheckpoint {
	t.Helper()
	var c messages.CompletedCheckpoint
	eventually(t, timeout, "a checkpoint completes with every operator", func() error {
		st, err := s.status()
		if err != nil {
			return err
		}
		if st.LastCompleted == nil || st.LastCompleted.ID <= after {
			return fmt.Errorf("no checkpoint after %d completed; status %+v", after, st)
		}
		for _, i := range []string{"counter-0", "counter-1", "counter-2"} {
			if !slices.Contains(st.LastCompleted.Participants, i) {
				return fmt.Errorf("checkpoint %d completed without %s: %v", st.LastCompleted.ID, i, st.LastCompleted.Participants)
			}
		}
		c = *st.LastCompleted
		return nil
	})
	return c
}

// waitApplied waits until the coordinator applied config version v.
func (s *stack) waitApplied(t *testing.T, v uint64) messages.Status {
	t.Helper()
	var st messages.Status
	eventually(t, 30*time.Second, fmt.Sprintf("status shows config version %d applied", v), func() error {
		var err error
		if st, err = s.status(); err != nil {
			return err
		}
		if st.Config.Version != v {
			return fmt.Errorf("applied version %d", st.Config.Version)
		}
		return nil
	})
	return st
}

// setConfig sends a set request as user and returns the config in force it answers.
func (s *stack) setConfig(t *testing.T, user, patch string) messages.ConfigView {
	t.Helper()
	out, err := s.natsAs(user, "req", "cairn.config.set."+job, patch, "--raw")
	if err != nil {
		t.Fatal(err)
	}
	var v messages.ConfigView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Version == 0 {
		t.Fatalf("set %s: reply %q (%v)", patch, out, err)
	}
	return v
}

// getConfig returns the config in force.
func (s *stack) getConfig(t *testing.T) messages.ConfigView {
	t.Helper()
	out := s.admin(t, "req", "cairn.config.get."+job, "", "--raw")
	var v messages.ConfigView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("get: reply %q: %v", out, err)
	}
	return v
}

// streamState returns `nats stream info --json` of a stream.
func (s *stack) streamInfo(t *testing.T, stream string) streamInfo {
	t.Helper()
	var info streamInfo
	out := s.admin(t, "stream", "info", stream, "--json")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("stream info %s: %v\n%s", stream, err, out)
	}
	return info
}

// streamInfo is the part of `nats stream info --json` the tests read.
type streamInfo struct {
	State struct {
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	} `json:"state"`
	Cluster struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"cluster"`
}

func (s *stack) streamLastSeq(t *testing.T, stream string) uint64 {
	t.Helper()
	return s.streamInfo(t, stream).State.LastSeq
}

// lastSeqFor returns the sequence of the last message on subject in stream.
func (s *stack) lastSeqFor(t *testing.T, stream, subject string) uint64 {
	t.Helper()
	out := s.admin(t, "stream", "get", stream, "--last-for", subject, "--json")
	var m struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Seq == 0 {
		t.Fatalf("stream get %s --last-for %s: %v\n%s", stream, subject, err, out)
	}
	return m.Seq
}

// subjectCounts returns the number of messages per subject in stream.
func (s *stack) subjectCounts(t *testing.T, stream string) map[string]int {
	t.Helper()
	var counts map[string]int
	if err := json.Unmarshal([]byte(s.admin(t, "stream", "subjects", stream, "--json")), &counts); err != nil {
		t.Fatalf("stream subjects %s: %v", stream, err)
	}
	return counts
}

// publishedTotals returns the per-key count and sum of every event the load generator
// published on subject, and their number: it numbers its events in their Nats-Msg-Id and
// derives each from its number (loadgen.Event), so the last message tells them all. The
// compose load generator runs once, over the default 8 keys.
func (s *stack) publishedTotals(t *testing.T, subject string) (map[string]messages.KeyTotals, int) {
	t.Helper()
	out := s.admin(t, "stream", "get", "CAIRN_INPUT", "--last-for", subject, "--json")
	var m struct {
		Headers []byte `json:"hdrs"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("stream get CAIRN_INPUT --last-for %s: %v\n%s", subject, err, out)
	}
	for l := range strings.Lines(string(m.Headers)) {
		if id, ok := strings.CutPrefix(strings.TrimSpace(l), "Nats-Msg-Id: "); ok {
			if n, ok := loadgen.SequenceOf(id); ok {
				return loadgen.Totals(n+1, loadgen.DefaultConfig(job).Keys), n + 1
			}
		}
	}
	t.Fatalf("the last message on %s has no load generator Nats-Msg-Id: %q", subject, m.Headers)
	return nil, 0
}

// barrier is one barrier seen by `nats sub cairn.barrier.<job> --headers-only`.
type barrier struct {
	id, version uint64
	at          time.Time
}

// barriers follows the job's barrier subject and parses what the CLI prints.
func (s *stack) barriers(t *testing.T) <-chan barrier {
	t.Helper()
	lines := s.follow(t, s.servers(), "sub", "cairn.barrier."+job, "--headers-only")
	out := make(chan barrier, 1024)
	go func() {
		defer close(out)
		var b barrier
		for l := range lines {
			text := strings.TrimSpace(l.text)
			switch {
			case strings.HasPrefix(text, "[#"):
				b = barrier{at: l.at}
			case strings.HasPrefix(text, messages.HeaderCheckpointID+":"):
				b.id = uint64(atoi(strings.TrimPrefix(text, messages.HeaderCheckpointID+":")))
			case strings.HasPrefix(text, messages.HeaderConfigVersion+":"):
				b.version = uint64(atoi(strings.TrimPrefix(text, messages.HeaderConfigVersion+":")))
			default:
				continue
			}
			if b.id > 0 && b.version > 0 && !b.at.IsZero() {
				out <- b
				b = barrier{}
			}
		}
	}()
	return out
}

// collectGaps returns the times between n+1 consecutive barriers of config version v.
func collectGaps(t *testing.T, barriers <-chan barrier, v uint64, n int, timeout time.Duration) []time.Duration {
	t.Helper()
	deadline := time.After(timeout)
	var prev barrier
	var gaps []time.Duration
	for len(gaps) < n {
		select {
		case b, ok := <-barriers:
			if !ok {
				t.Fatal("nats sub on the barrier subject ended")
			}
			if b.version != v {
				continue
			}
			if prev.id != 0 && b.id == prev.id+1 {
				gaps = append(gaps, b.at.Sub(prev.at).Round(time.Millisecond))
			}
			prev = b
		case <-deadline:
			t.Fatalf("after %s, %d of %d barrier gaps at config version %d: %v", timeout, len(gaps), n, v, gaps)
		}
	}
	return gaps
}

// median returns the median of ds.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
