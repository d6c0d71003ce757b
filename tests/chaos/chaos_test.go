package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
)

// The job under test and the shape of its load.
const (
	job       = "chaos"
	instances = 3
	// keys is enough for the keyed store's chains of deltas to outlive the duplicate start
	// and the kills up to the final restore: a checkpoint changes a few keys of thousands.
	keys = 3000
	// rate is events per second per instance.
	rate = 40.0
	// stormLength is how long the chaos schedule runs.
	stormLength = 150 * time.Second
	// initialInterval and checkpointTimeout are set before the storm; the timeout is short
	// so that checkpoints hit by kills end quickly.
	initialInterval   = 200 * time.Millisecond
	checkpointTimeout = 5 * time.Second
	// failoverSanity bounds the gap between a holder kill and the next barrier; the
	// expected gap is about the lease TTL plus the interval, and is reported, not asserted.
	failoverSanity = 30 * time.Second
)

// replay is the command that runs the harness with a given seed.
const replay = "CAIRN_CHAOS=1 CAIRN_CHAOS_SEED=%d go test -count=1 -timeout 8m -run TestChaos -v ./tests/chaos/"

// TestChaos runs the seeded chaos schedule against real processes and checks that the
// state stays exact; see the package documentation and docs/chaos.md.
func TestChaos(t *testing.T) {
	if os.Getenv("CAIRN_CHAOS") != "1" {
		t.Skip("the chaos harness runs only with CAIRN_CHAOS=1 (about 3 minutes); see docs/chaos.md")
	}
	seed := chaosSeed(t)
	t.Logf("chaos seed %d; replay with: "+replay, seed, seed)
	ctx, cancel := context.WithTimeout(t.Context(), 7*time.Minute)
	defer cancel()

	r := &run{t: t, plan: newSchedule(seed, stormLength), rep: &report{seed: seed, start: time.Now()}}
	r.rep.logDir = keptDir(t, seed)
	defer func() {
		if r.c != nil {
			surprises, fenced := r.c.unexpected(), r.c.fencedExits()
			r.rep.add(func(rep *report) { rep.surprises, rep.fenced = surprises, fenced })
		}
		t.Log(r.rep.String())
	}()

	bins := buildBinaries(t, t.TempDir())
	r.c = startCluster(t, bins, r.rep.logDir, t.TempDir())
	r.setUp(ctx)
	r.storm(ctx)
	r.settle(ctx)
	r.restoreAll(ctx)
	r.checkOutputs(ctx)
	r.checkHistory(ctx)
	if s := r.rep.shortfall(); s != "" {
		t.Errorf("the storm fell short: %s", s)
	}
	for _, s := range r.c.unexpected() {
		t.Errorf("unexpected exit: %s", s)
	}
}

// chaosSeed returns CAIRN_CHAOS_SEED, or a seed from the clock when it is unset.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	s := os.Getenv("CAIRN_CHAOS_SEED")
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	seed, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("CAIRN_CHAOS_SEED=%q: want a decimal unsigned integer", s)
	}
	return seed
}

// keptDir returns the directory for the process logs: CAIRN_CHAOS_LOGS when set (created
// if needed, always kept), otherwise a new temporary directory that is removed when the
// test passes and kept for the report when it fails.
func keptDir(t *testing.T, seed uint64) string {
	t.Helper()
	if dir := os.Getenv("CAIRN_CHAOS_LOGS"); dir != "" {
		dir = filepath.Join(dir, fmt.Sprintf("seed-%d-%s", seed, time.Now().Format("150405")))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("cairn-chaos-%d-", seed))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process logs kept in %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// run is one chaos run: the processes, the harness's view of them, and the report.
type run struct {
	t    *testing.T
	plan schedule
	c    *cluster
	obs  *observer
	load *load
	rep  *report

	stopLoad context.CancelFunc
	loadDone chan error
	// lastSeq is the last input sequence of each instance once the load stopped.
	lastSeq []uint64
}

// setUp connects the harness, sets the first config, waits for a first completed
// checkpoint with every instance registered and starts the load.
func (r *run) setUp(ctx context.Context) {
	t := r.t
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: r.c.url, Name: "cairn-chaos-harness"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if r.obs, err = newObserver(nc); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitNATS(wctx, r.obs.ready); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	set := r.setConfig(wctx, initialInterval)
	if set.err != nil {
		t.Fatalf("first config: %v", set.err)
	}
	if err := poll(wctx, 50*time.Millisecond, "stream "+cairnjs.InputStream, func() (bool, error) {
		_, err := r.obs.js.Stream(wctx, cairnjs.InputStream)
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := poll(wctx, 100*time.Millisecond, "every instance registered", func() (bool, error) {
		st, err := r.obs.status(wctx)
		return len(st.Instances) == instances, err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.obs.completedAfter(wctx, set.at); err != nil {
		t.Fatalf("no checkpoint completed before the storm: %v", err)
	}

	lnc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: r.c.url, Name: "cairn-chaos-load"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lnc.Close)
	ljs, err := jetstream.New(lnc)
	if err != nil {
		t.Fatal(err)
	}
	r.load = newLoad(ljs, r.plan.seed)
	stop, stopLoad := context.WithCancel(ctx)
	r.stopLoad, r.loadDone = stopLoad, make(chan error, 1)
	go func() { r.loadDone <- r.load.run(ctx, stop) }()
	t.Logf("set up: %d processes running, first checkpoint completed; storm of %s begins", len(r.c.all()), stormLength)
}

// setConfig sets the job's interval (and the checkpoint timeout), asking again while
// configsvc cannot answer.
func (r *run) setConfig(ctx context.Context, interval time.Duration) configResult {
	res := configResult{interval: interval, at: time.Now()}
	body := fmt.Sprintf(`{"interval":%q,"timeout":%q,"retain":%d}`, interval, checkpointTimeout, retain)
	var v messages.ConfigView
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res.attempts, res.err = r.obs.requestJSON(sctx, subjects.ConfigSet(job), []byte(body), &v)
	res.version = v.Version
	r.rep.add(func(rep *report) { rep.configs = append(rep.configs, res) })
	return res
}

// storm runs the four timelines of the schedule at once and waits for every restart.
func (r *run) storm(ctx context.Context) {
	start := time.Now()
	r.rep.stormStart = start
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, k := range r.plan.operators {
			if !pause(ctx, time.Until(start.Add(k.at))) {
				return
			}
			r.killOperator(ctx, k)
		}
	})
	wg.Go(func() {
		for _, a := range r.plan.control {
			if !pause(ctx, time.Until(start.Add(a.at))) {
				return
			}
			if a.natsRestart {
				r.restartNATS(ctx, a)
			} else {
				r.killHolder(ctx, a)
			}
		}
	})
	wg.Go(func() {
		if pause(ctx, time.Until(start.Add(r.plan.duplicate.at))) {
			r.startDuplicate(ctx, r.plan.duplicate)
		}
	})
	wg.Go(func() {
		for _, c := range r.plan.configs {
			if !pause(ctx, time.Until(start.Add(c.at))) {
				return
			}
			if res := r.setConfig(ctx, c.interval); res.err != nil {
				r.t.Errorf("config change to %s: %v", c.interval, res.err)
			}
		}
	})
	wg.Wait()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.c.waitRestarts(wctx); err != nil {
		r.t.Fatal(err)
	}
	r.rep.stormEnd = time.Now()
	r.t.Logf("storm over after %s", r.rep.stormEnd.Sub(start).Round(time.Millisecond))
}

// killOperator SIGKILLs one instance (or stops it with SIGTERM, which must exit 0), just
// after a barrier when the plan says so, and restarts it after the planned delay. It
// notes whether the instance's input was trimmed by then: a restart that replayed from
// sequence 1 could then not end exact.
func (r *run) killOperator(ctx context.Context, k operatorKill) {
	mu := &r.c.opMu[k.instance]
	mu.Lock()
	defer mu.Unlock()
	p := r.c.ops[k.instance]
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !p.Running() {
		if err := p.WaitRunning(wctx); err != nil {
			r.t.Errorf("operator kill: %v", err)
			return
		}
		pause(ctx, k.settle)
	}
	res := operatorKillResult{instance: instanceName(k.instance), graceful: k.graceful, away: k.away, down: k.down}
	if k.afterBarrier {
		bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.obs.waitBarriers(bctx, r.obs.barrierCount())
		bcancel()
		res.afterBarrier = err == nil && pause(ctx, k.offset)
	}
	var at time.Time
	var err error
	if k.graceful {
		// A SIGTERM is about draining a running operator: a process signalled in its first
		// milliseconds, before Go installed its handler, dies of the signal instead.
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		_ = p.WaitReady(wctx)
		wcancel()
		var code int
		at, code, err = p.Signal(syscall.SIGTERM, 20*time.Second)
		if err == nil && code != 0 {
			r.t.Errorf("%s exited with code %d after SIGTERM; want 0", p.Name, code)
		}
	} else {
		at, err = p.Kill()
	}
	if err != nil {
		r.t.Errorf("operator stop: %v", err)
		return
	}
	if b, ok := r.obs.lastBarrier(at); ok {
		if ready := p.ReadySince(); !ready.IsZero() && b.at.After(ready) {
			res.barrier = b.id
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	res.firstSeq, res.firstSeqErr = r.obs.firstSeq(fctx, subjects.Input(job, res.instance))
	fcancel()
	r.rep.add(func(rep *report) { rep.operatorKills = append(rep.operatorKills, res) })
	r.c.restartAfter(p, k.down)
}

// startDuplicate starts a second process with an instance id in use. Within 15 s exactly
// one of the two must exit non-zero, with an ERROR naming the incarnation that replaced it.
// The survivor runs for the planned hold; when the original was the one that exited, the
// duplicate is then stopped with SIGTERM and the original started again.
func (r *run) startDuplicate(ctx context.Context, d duplicateStart) {
	mu := &r.c.opMu[d.instance]
	mu.Lock()
	defer mu.Unlock()
	orig := r.c.ops[d.instance]
	res := duplicateResult{instance: instanceName(d.instance)}
	defer func() { r.rep.add(func(rep *report) { rep.duplicate = &res }) }()
	fail := func(format string, args ...any) {
		res.err = fmt.Errorf(format, args...)
		r.t.Errorf("duplicate instance: %v", res.err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := orig.WaitRunning(wctx); err != nil {
		fail("%v", err)
		return
	}
	if err := orig.WaitReady(wctx); err != nil {
		fail("%v", err)
		return
	}
	dup := r.c.dups[d.instance]
	r.c.expectFence(orig, dup)
	defer r.c.expectFence()
	res.at = time.Now()
	if err := dup.Start(); err != nil {
		fail("%v", err)
		return
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
		fail("15 s after a second process started as %s, both still run", res.instance)
		if err := dup.Terminate(20 * time.Second); err != nil {
			r.t.Errorf("duplicate instance: %v", err)
		}
		return
	}
	res.loser, res.exitedAfter = loser.Name, time.Since(res.at)
	res.code, _ = loser.Exit()
	if res.code == 0 {
		fail("%s exited with code 0; want non-zero", loser.Name)
	}
	if err := survivor.WaitReady(wctx); err != nil {
		fail("the survivor: %v", err)
		return
	}
	res.named = namesIncarnation(loser.Lines(), survivor.Incarnation())
	if !res.named {
		fail("%s logged no ERROR naming the incarnation that replaced it (%s)", loser.Name, survivor.Incarnation())
	}
	pause(ctx, d.hold)
	if loser == orig {
		if err := dup.Terminate(20 * time.Second); err != nil {
			fail("stop the duplicate: %v", err)
		}
		if err := orig.Start(); err != nil {
			fail("start %s again: %v", orig.Name, err)
		}
	}
}

// namesIncarnation reports whether an error-level JSON log line names incarnation other
// than as its own.
func namesIncarnation(lines []string, incarnation string) bool {
	if incarnation == "" {
		return false
	}
	for _, l := range lines {
		var f proctest.LogLine
		if !strings.Contains(l, incarnation) || json.Unmarshal([]byte(l), &f) != nil || f.Level != "error" {
			continue
		}
		if f.Incarnation != incarnation || strings.Count(l, incarnation) > 1 {
			return true
		}
	}
	return false
}

// killHolder SIGKILLs the coordinator holding the job's lease while the other one runs,
// restarts it after the planned delay, and measures the time to the next barrier.
func (r *run) killHolder(ctx context.Context, a controlAction) {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	f, err := r.failover(wctx, a)
	if err != nil {
		f.err = err
		r.t.Errorf("holder kill at %s: %v", clock(f.at), err)
	}
	r.rep.add(func(rep *report) { rep.failovers = append(rep.failovers, f) })
}

// failover waits until both coordinators run and the holder is known, kills the holder
// and waits for the first barrier from another coordinator.
func (r *run) failover(ctx context.Context, a controlAction) (failover, error) {
	var f failover
	byID := map[string]*proctest.Proc{}
	for _, p := range r.c.coords {
		if err := p.WaitRunning(ctx); err != nil {
			return f, err
		}
		id, err := p.CoordinatorID(ctx)
		if err != nil {
			return f, err
		}
		byID[id] = p
	}
	var victim *proctest.Proc
	var st messages.Status
	if err := poll(ctx, 50*time.Millisecond, "a lease holder that is one of the running coordinators", func() (bool, error) {
		var err error
		if st, err = r.obs.status(ctx); err != nil {
			return false, err
		}
		victim = byID[st.Holder]
		return victim != nil && victim.CurrentID() == st.Holder, nil
	}); err != nil {
		return f, err
	}
	f.holder, f.proc = st.Holder, victim.Name
	f.interval, _ = time.ParseDuration(st.EffectiveInterval)
	at, err := victim.Kill()
	if err != nil {
		return f, err
	}
	f.at = at
	r.c.restartAfter(victim, a.down)
	b, err := r.obs.barrierAfter(ctx, at, f.holder)
	if err != nil {
		return f, err
	}
	f.gap, f.next, f.nextID = b.at.Sub(at), b.coordinator, b.id
	if f.gap > failoverSanity {
		return f, fmt.Errorf("the next barrier came %s after the holder was killed; sanity bound %s", f.gap, failoverSanity)
	}
	return f, nil
}

// restartNATS SIGKILLs the nats-server, starts it again on the same port and store after
// the planned delay, and measures the time to the next barrier and to the next completed
// checkpoint.
func (r *run) restartNATS(ctx context.Context, a controlAction) {
	res := natsRestart{down: a.down}
	defer r.rep.add(func(rep *report) { rep.natsRestarts = append(rep.natsRestarts, res) })
	at, err := r.c.nats.Kill()
	if err != nil {
		res.err = err
		r.t.Errorf("NATS restart: %v", err)
		return
	}
	res.at = at
	pause(ctx, a.down)
	if err := r.c.nats.Start(); err != nil {
		res.err = err
		r.t.Errorf("NATS restart: %v", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitNATS(wctx, r.obs.ready); err != nil {
		res.err = err
		r.t.Errorf("NATS restart: %v", err)
		return
	}
	res.ready = time.Since(at)
	b, err := r.obs.barrierAfter(wctx, at, "")
	if err != nil {
		res.err = err
		r.t.Errorf("NATS restart: no barrier after it: %v", err)
		return
	}
	res.nextBarrier = b.at.Sub(at)
	e, err := r.obs.completedAfter(wctx, at)
	if err != nil {
		res.err = err
		r.t.Errorf("NATS restart: no checkpoint completed after it: %v", err)
		return
	}
	res.completed = e.at.Sub(at)
}

// settle stops the load, waits until every instance has applied its whole input and
// compares the state with what was published.
func (r *run) settle(ctx context.Context) {
	t := r.t
	r.stopLoad()
	if err := <-r.loadDone; err != nil {
		t.Fatalf("load: %v", err)
	}
	values, _, retries := r.load.totals()
	published := make([]int, len(values))
	for i, v := range values {
		published[i] = len(v)
	}
	r.rep.published, r.rep.publishRetries = published, retries

	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	st, err := r.obs.js.Stream(wctx, cairnjs.InputStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(wctx, jetstream.WithSubjectFilter(subjects.Input(job, ">")))
	if err != nil {
		t.Fatal(err)
	}
	r.lastSeq = make([]uint64, instances)
	trimmed := make([]string, instances)
	for i := range instances {
		subject := subjects.Input(job, instanceName(i))
		kept := int(info.State.Subjects[subject])
		first, err := r.obs.firstSeq(wctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		if first <= 1 {
			t.Errorf("%s still starts at sequence %d: the coordinator never trimmed it, so the exactness check cannot tell a restore from a replay", subject, first)
		}
		trimmed[i] = fmt.Sprintf("%s from sequence %d (%d of %d events kept)", instanceName(i), first, kept, published[i])
		// What is left must be exactly the newest events published, in order: nothing
		// lost or duplicated by NATS, nothing but the oldest removed by trimming.
		msgs, err := r.obs.readStream(wctx, cairnjs.InputStream, subject)
		if err != nil {
			t.Fatal(err)
		}
		for j, m := range msgs {
			if want := fmt.Sprintf("%s-%d", instanceName(i), published[i]-len(msgs)+j); m.Headers().Get(jetstream.MsgIDHeader) != want {
				t.Errorf("%s: message %d of the %d left is %s; want %s: NATS lost or duplicated input, or trimming removed more than the oldest events",
					subject, j+1, len(msgs), m.Headers().Get(jetstream.MsgIDHeader), want)
				break
			}
		}
		m, err := st.GetLastMsgForSubject(wctx, subject)
		if err != nil {
			t.Fatalf("last event on %s: %v", subject, err)
		}
		r.lastSeq[i] = m.Sequence
	}
	r.rep.trimmed = trimmed
	r.compare(ctx, "after the storm")
}

// compare waits until every instance's position reaches its last input sequence, then
// compares its per-key counts and sums with the published ones; it reports whether all
// were exact.
func (r *run) compare(ctx context.Context, when string) bool {
	_, expected, _ := r.load.totals()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	exact := true
	var lost, doubled int64
	for i := range instances {
		inst := instanceName(i)
		var st messages.OperatorState
		err := poll(wctx, 100*time.Millisecond, inst+" to apply its whole input", func() (bool, error) {
			var err error
			st, err = r.obs.operatorState(wctx, inst)
			return st.Position >= r.lastSeq[i], err
		})
		if err != nil {
			r.t.Errorf("%s: %v (position %d, last input sequence %d)", when, err, st.Position, r.lastSeq[i])
			exact = false
			continue
		}
		if st.Position != r.lastSeq[i] {
			r.t.Errorf("%s: %s is at position %d past its last input sequence %d", when, inst, st.Position, r.lastSeq[i])
		}
		l, d, problems := exactness(inst, expected[i], st)
		lost, doubled = lost+l, doubled+d
		for _, p := range problems {
			r.t.Errorf("%s: %s", when, p)
			exact = false
		}
	}
	verdict := "exact"
	if !exact {
		verdict = "NOT EXACT"
	}
	r.rep.add(func(rep *report) {
		rep.exactness = append(rep.exactness, fmt.Sprintf("%s: %s (%d events lost, %d double-counted)", when, verdict, lost, doubled))
	})
	return exact
}

// restoreAll kills every instance at once and restarts it: each restores the newest
// checkpoint and replays the rest of its input, and must end exact again. Then a new
// checkpoint must complete with the restarted instances.
func (r *run) restoreAll(ctx context.Context) {
	for _, p := range r.c.ops {
		if _, err := p.Kill(); err != nil {
			r.t.Errorf("final restore: %v", err)
		}
	}
	restarted := time.Now()
	for _, p := range r.c.ops {
		if err := p.Start(); err != nil {
			r.t.Fatalf("final restore: %v", err)
		}
	}
	r.compare(ctx, "after killing and restarting every instance")
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := r.obs.completedAfter(wctx, restarted); err != nil {
		r.t.Errorf("checkpointing did not resume after the final restart: %v", err)
	}
}

// checkOutputs reads back every instance's outputs and checks that each event produced
// exactly one, in order, across every kill and restore.
func (r *run) checkOutputs(ctx context.Context) {
	values, _, _ := r.load.totals()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	st, err := r.obs.js.Stream(wctx, cairnjs.OutputStream)
	if err != nil {
		r.t.Fatalf("look up %s: %v", cairnjs.OutputStream, err)
	}
	window := st.CachedInfo().Config.Duplicates
	if window != outputWindow {
		r.t.Errorf("%s has a duplicate window of %s, want %s: the exactly-once output checked would be the window's", cairnjs.OutputStream, window, outputWindow)
	}
	exact := true
	total := 0
	for i := range instances {
		inst := instanceName(i)
		msgs, err := r.obs.readStream(wctx, cairnjs.OutputStream, subjects.Output(job, inst))
		if err != nil {
			r.t.Errorf("read the outputs of %s: %v", inst, err)
			exact = false
			continue
		}
		outputs := make([]aggregator.KeyUpdate, len(msgs))
		for j, m := range msgs {
			if err := json.Unmarshal(m.Data(), &outputs[j]); err != nil {
				r.t.Fatalf("output of %s: %v", inst, err)
			}
		}
		total += len(outputs)
		for _, p := range checkOutputs(inst, values[i], outputs) {
			r.t.Errorf("outputs: %s", p)
			exact = false
		}
	}
	verdict := "exactly once, in order"
	if !exact {
		verdict = "NOT EXACT"
	}
	r.rep.add(func(rep *report) {
		rep.outputs = fmt.Sprintf("%d outputs, %s (duplicate window of %s: %s)", total, verdict, cairnjs.OutputStream, window)
	})
}

// checkHistory reads back the config and checkpoint streams and checks them and the
// barriers seen against each other.
func (r *run) checkHistory(ctx context.Context) {
	t := r.t
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	msgs, err := r.obs.readStream(wctx, cairnjs.ConfigStream, subjects.ConfigEvents(job))
	if err != nil {
		t.Fatalf("read the config stream: %v", err)
	}
	configs := make([]messages.ConfigEvent, 0, len(msgs))
	for _, m := range msgs {
		var e messages.ConfigEvent
		if err := messages.Unmarshal(m.Data(), &e); err != nil {
			t.Fatalf("config event: %v", err)
		}
		configs = append(configs, e)
	}
	lastVersion := uint64(len(configs))
	r.rep.storedVersions = lastVersion
	for _, p := range checkConfigs(configs, r.rep.configList()) {
		t.Errorf("config history: %s", p)
	}
	var st messages.Status
	if err := poll(wctx, 100*time.Millisecond, fmt.Sprintf("the coordinator to apply config version %d", lastVersion), func() (bool, error) {
		var err error
		st, err = r.obs.status(wctx)
		return st.Config.Version == lastVersion, err
	}); err != nil {
		t.Errorf("config: %v (status shows version %d, holder %q)", err, st.Config.Version, st.Holder)
	}

	msgs, err = r.obs.readStream(wctx, cairnjs.CheckpointStream, subjects.CheckpointEvent(job, "*"))
	if err != nil {
		t.Fatalf("read the checkpoint stream: %v", err)
	}
	events := make([]messages.CheckpointEvent, 0, len(msgs))
	for _, m := range msgs {
		if m.Subject() == subjects.MemberEvents(job) || m.Subject() == subjects.Alarms(job) {
			continue // a member audit or alarm event, not a checkpoint event
		}
		var e messages.CheckpointEvent
		if err := messages.Unmarshal(m.Data(), &e); err != nil {
			t.Fatalf("checkpoint event: %v", err)
		}
		events = append(events, e)
	}
	tally, problems := checkEvents(events)
	r.rep.tally = tally
	for _, p := range problems {
		t.Errorf("checkpoint events: %s", p)
	}

	var mid []bool
	for _, k := range r.rep.operatorKillList() {
		mid = append(mid, k.barrier != 0 && !r.obs.answered(k.instance, k.barrier))
	}
	r.rep.add(func(rep *report) {
		for i := range mid {
			rep.operatorKills[i].midSnapshot = mid[i]
		}
	})
	barriers, seenProblems := r.obs.seen()
	r.rep.barriers = len(barriers)
	if len(barriers) > 0 {
		r.rep.barrierIDs = [2]uint64{barriers[0].id, barriers[len(barriers)-1].id}
	}
	for _, p := range append(seenProblems, checkBarriers(barriers, lastVersion)...) {
		t.Errorf("barriers: %s", p)
	}
}
