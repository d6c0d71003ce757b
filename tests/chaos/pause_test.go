package chaos

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// simBarrier is a barrier as the simulated operators received it.
type simBarrier struct {
	at          time.Time
	id, token   uint64
	coordinator string
	// acked is whether the simulated operators acted on it.
	acked bool
}

// fencingSim simulates a job's operator instances on the wire contract: registrations
// renewed in KV, and an ack for every barrier an operator would act on (a new id, a token
// not below the highest seen). It records every barrier and completed checkpoint.
type fencingSim struct {
	job       string
	instances []string

	mu        sync.Mutex
	barriers  []simBarrier
	completed []uint64
	token     uint64 // the highest token seen
	last      uint64 // the highest checkpoint id acted on
}

func (s *fencingSim) onBarrier(nc *nats.Conn, m *nats.Msg) {
	at := time.Now()
	var b messages.Barrier
	if messages.Unmarshal(m.Data, &b) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := simBarrier{at: at, id: b.CheckpointID, token: b.Token, coordinator: b.Coordinator}
	// The operator runtime's rule: a lower token than seen, or an id already handled, is
	// not acted on (an id already handled is acked again, as a resent barrier is).
	act := (b.Token == 0 || b.Token >= s.token) && b.CheckpointID >= s.last
	if act {
		s.token, s.last, seen.acked = max(s.token, b.Token), b.CheckpointID, true
		for _, inst := range s.instances {
			data, _ := messages.Marshal(&messages.Ack{
				Schema: messages.SchemaVersion, Job: s.job, CheckpointID: b.CheckpointID, Instance: inst, Incarnation: "sim-" + inst,
				Kind:     messages.AckDone,
				Snapshot: messages.SnapshotRef{Object: cairnjs.ObjectName(s.job, b.CheckpointID, inst, "sim"), Size: 8, Digest: "SHA-256=sim"},
			})
			_ = nc.Publish(cairnjs.Subjects{}.InstanceAck(s.job, inst), data)
		}
	}
	s.barriers = append(s.barriers, seen)
}

func (s *fencingSim) onEvent(m *nats.Msg) {
	if !strings.HasSuffix(m.Subject, ".completed") {
		return
	}
	var ev messages.CheckpointEvent
	if messages.Unmarshal(m.Data, &ev) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completed = append(s.completed, ev.CheckpointID)
}

// register keeps the instances registered until ctx ends.
func (s *fencingSim) register(ctx context.Context, kv interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		for _, inst := range s.instances {
			data, _ := messages.Marshal(&messages.Registration{Schema: messages.SchemaVersion, Job: s.job, Instance: inst, Incarnation: "sim-" + inst, StartedAt: time.Now().UTC()})
			_, _ = kv.Put(ctx, cairnjs.RegistrationKey(s.job, inst), data)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// snapshot returns copies of the barriers and completed ids recorded so far.
func (s *fencingSim) snapshot() ([]simBarrier, []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.barriers), slices.Clone(s.completed)
}

// TestPausedHolderIsFenced is acceptance 1 of issue 8 with separate processes: two `cairn
// coordinator` processes on one job at 200 ms, the holder SIGSTOPped for 8 s (past the
// lease TTL of 5 s) and resumed. The standby takes over during the pause; after the resume
// the old holder sends at most one barrier, which the operators do not act on, and
// completes nothing; completed ids stay strictly increasing and checkpoints keep
// completing.
func TestPausedHolderIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses a coordinator process for 8 s")
	}
	const (
		job      = "paused"
		interval = 200 * time.Millisecond
		paused   = 8 * time.Second
	)
	dir := t.TempDir()
	cairn := proctest.Cairn(dir)
	proctest.Build(t, cairn)
	bin := cairn.Out
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, cairnjs.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := messages.DefaultConfig()
	cfg.Interval, cfg.Timeout = interval, 5*time.Second
	data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job, Version: 1, Config: cfg, Time: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, cairnjs.Subjects{}.ConfigEvents(job), data); err != nil {
		t.Fatal(err)
	}
	sim := &fencingSim{job: job, instances: []string{"op-0", "op-1"}}
	go sim.register(ctx, res.Leases, time.Second)
	if _, err := nc.Subscribe(cairnjs.Subjects{}.Barrier(job), func(m *nats.Msg) { sim.onBarrier(nc, m) }); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(cairnjs.Subjects{}.CheckpointEvent(job, "*"), sim.onEvent); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	env := proctest.ServiceEnv(srv.URL)
	start := func(name string) *proctest.Proc {
		t.Helper()
		p, err := proctest.New(name, filepath.Join(dir, name+".log"), bin, env, "coordinator", "--jobs", job)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = p.Resume() // a test that failed during the pause leaves it stopped
			if err := p.Terminate(10 * time.Second); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if t.Failed() {
				t.Logf("--- last lines of %s:\n%s", name, p.Tail(30))
			}
			p.Close()
		})
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wait := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if err := proctest.Poll(wctx, 10*time.Millisecond, what, func() (bool, error) { return cond(), nil }); err != nil {
			t.Fatal(err)
		}
	}
	logged := func(p *proctest.Proc, msg string) bool {
		b, _ := os.ReadFile(p.LogPath)
		return bytes.Contains(b, []byte(`"message":"`+msg+`"`))
	}

	holder := start("coordinator-a")
	idA, err := holder.CoordinatorID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(20*time.Second, "two checkpoints completed under the first coordinator", func() bool {
		_, done := sim.snapshot()
		return len(done) >= 2
	})
	standby := start("coordinator-b")
	idB, err := standby.CoordinatorID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(20*time.Second, "the standby running", func() bool { return logged(standby, "coordinator running") })
	if bs, _ := sim.snapshot(); bs[len(bs)-1].coordinator != idA {
		t.Fatalf("the last barrier before the pause came from %s, want the first coordinator %s", bs[len(bs)-1].coordinator, idA)
	}

	pausedAt, err := holder.Pause()
	if err != nil {
		t.Fatal(err)
	}
	// Expected after the lease TTL (5 s) and an interval; 3 s more than the pause leave
	// room for a loaded -race run, and the holder stays stopped until the barrier comes.
	wait(paused+3*time.Second, "a barrier of the standby during the pause", func() bool {
		bs, _ := sim.snapshot()
		return slices.ContainsFunc(bs, func(b simBarrier) bool { return b.coordinator == idB })
	})
	<-time.After(time.Until(pausedAt.Add(paused))) // the rest of the pause
	resumedAt, err := holder.Resume()
	if err != nil {
		t.Fatal(err)
	}
	var afterResume int
	wait(15*time.Second, "five checkpoints completed after the resume and the old holder fenced", func() bool {
		bs, done := sim.snapshot()
		afterResume = 0
		for _, id := range done {
			if b := findBarrier(bs, id); b != nil && b.at.After(resumedAt) {
				afterResume++
			}
		}
		return afterResume >= 5 && logged(holder, "stopped coordinating the job")
	})

	bs, done := sim.snapshot()
	var takeover time.Duration
	// The old holder's barriers after the resume under its old tenure: those whose token is
	// not above the standby's. (When the old holder is the job's preferred replica, the
	// standby hands the lease back to it later; that new tenure's barriers carry a higher
	// token and are legitimate.)
	var standbyToken uint64
	for _, b := range bs {
		if b.coordinator == idB {
			standbyToken = max(standbyToken, b.token)
		}
	}
	var fromOld []simBarrier
	for _, b := range bs {
		if b.coordinator == idB && takeover == 0 {
			takeover = b.at.Sub(pausedAt)
		}
		if b.coordinator == idA && b.at.After(resumedAt) && b.token <= standbyToken {
			fromOld = append(fromOld, b)
		}
	}
	t.Logf("standby's first barrier %s after the pause; %d barriers from the old holder after the resume; %d completed in all, %d after the resume",
		takeover, len(fromOld), len(done), afterResume)
	if len(fromOld) > 1 {
		t.Errorf("the old holder sent %d barriers after the resume, want at most 1: %+v", len(fromOld), fromOld)
	}
	for _, b := range fromOld {
		if b.acked {
			t.Errorf("the operators acted on the old holder's barrier %+v", b)
		}
	}
	for i := 1; i < len(done); i++ {
		if done[i] <= done[i-1] {
			t.Errorf("completed ids not strictly increasing: %v", done)
			break
		}
	}
	for _, id := range done {
		b := findBarrier(bs, id)
		if b == nil {
			t.Errorf("checkpoint %d completed without a barrier seen", id)
			continue
		}
		if b.coordinator == idA && b.at.After(pausedAt) && b.token <= standbyToken {
			t.Errorf("checkpoint %d of the old holder's old tenure, triggered after the pause began, completed", id)
		}
	}
}

// findBarrier returns the first barrier of checkpoint id, or nil.
func findBarrier(bs []simBarrier, id uint64) *simBarrier {
	for i := range bs {
		if bs[i].id == id {
			return &bs[i]
		}
	}
	return nil
}
