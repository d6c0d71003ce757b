package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// fleetShape is the size of BenchmarkCoordinatorFleet; CAIRN_FLEET_JOBS,
// CAIRN_FLEET_INSTANCES and CAIRN_FLEET_WINDOW (a duration) override the defaults, which
// are 1000 jobs × 4 instances and 20 s, or 20 jobs × 2 instances and 3 s in the short mode
// (-short).
type fleetShape struct {
	jobs, instances int
	interval        time.Duration
	window          time.Duration
}

func fleetFromEnv(b *testing.B) fleetShape {
	s := fleetShape{jobs: 1000, instances: 4, interval: time.Second, window: 20 * time.Second}
	if testing.Short() {
		s.jobs, s.instances, s.window = 20, 2, 3*time.Second
	}
	for key, dst := range map[string]*int{"CAIRN_FLEET_JOBS": &s.jobs, "CAIRN_FLEET_INSTANCES": &s.instances} {
		if v := os.Getenv(key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				b.Fatalf("%s=%q: want a positive integer", key, v)
			}
			*dst = n
		}
	}
	if v := os.Getenv("CAIRN_FLEET_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 2*s.interval {
			b.Fatalf("CAIRN_FLEET_WINDOW=%q: want a duration of at least %s", v, 2*s.interval)
		}
		s.window = d
	}
	return s
}

// BenchmarkCoordinatorFleet measures one coordinator process (`cairn coordinator`, built
// from this tree) driving many jobs whose operators are simulated on the real wire
// contract: every instance has a registration in CAIRN_LEASES renewed every TTL/3, and
// answers each barrier of its job with an ack (a snapshot reference that is never
// uploaded). Every job runs at a 1 s interval. After all jobs have completed a checkpoint,
// a window (20 s by default) is measured:
//
//   - the coordinator's CPU (user + system, from /proc) as a share of one core, and per
//     completed checkpoint;
//   - how late each barrier is: the gap to the job's previous barrier minus the interval,
//     as received by the simulator, and as the barriers' own trigger times show it;
//   - completed and aborted checkpoints in the window.
//
// The floor is the same fan-out without Cairn, measured in the same run: one Go timer
// per job publishing a core message every interval on one connection, received by the
// same kind of subscriber; its lateness is what NATS and the machine add by themselves.
// It is measured twice: alone before the fleet starts, and alongside the fleet in the
// same window (the machine's scheduling delays under the run's load).
//
// It runs only with CAIRN_FLEET=1, one window per iteration, or scaled down in the short
// mode (-short):
//
//	CAIRN_FLEET=1 go test -run '^$' -bench CoordinatorFleet -benchtime=1x -timeout 20m ./tests/bench/
func BenchmarkCoordinatorFleet(b *testing.B) {
	if os.Getenv("CAIRN_FLEET") != "1" && !testing.Short() {
		b.Skip("set CAIRN_FLEET=1 to run the fleet benchmark (minutes), or -short for the short mode")
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc to read the coordinator's CPU time")
	}
	shape := fleetFromEnv(b)
	srv := natstest.Start(b)
	nc := srv.Connect(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	res, err := cairnjs.Ensure(ctx, js, cairnjs.Options{})
	if err != nil {
		b.Fatal(err)
	}
	bin := buildCairn(b)

	for range b.N {
		floor := timerFloor(b, srv, shape)
		got := runFleet(b, srv, js, res, bin, shape)
		late := figure{name: "barrier lateness", floorName: "timer fan-out lateness", got: got.late, floor: floor}
		late.report(b, "late_", true)
		b.ReportMetric(got.cpuShare*100, "cpu_%core")
		b.ReportMetric(float64(got.cpu.Microseconds())/float64(max(got.completed, 1)), "cpu_us/checkpoint")
		b.ReportMetric(float64(got.completed), "completed")
		b.ReportMetric(float64(got.aborted), "aborted")
		b.ReportMetric(ms(got.late.percentile(100)), "late_max_ms")
		b.ReportMetric(ms(got.scheduled.percentile(99)), "sched_late_p99_ms")
		b.ReportMetric(ms(got.scheduled.percentile(100)), "sched_late_max_ms")
		b.ReportMetric(ms(got.fanOut.percentile(99)), "late_floor_loaded-p99-ms")
		b.ReportMetric(ms(got.fanOut.percentile(100)), "late_floor_loaded-max-ms")
		b.Logf("%d jobs × %d instances at %s, window %s: coordinator CPU %.1f %% of a core (%.0f µs per checkpoint), %d completed, %d aborted; barrier lateness p50 %.2f ms, p99 %.2f ms, max %.2f ms (timer floor alone p50 %.2f ms, p99 %.2f ms, max %.2f ms; alongside the run p50 %.2f ms, p99 %.2f ms, max %.2f ms; by the barriers' trigger times p50 %.2f ms, p99 %.2f ms, max %.2f ms)",
			shape.jobs, shape.instances, shape.interval, shape.window, got.cpuShare*100,
			float64(got.cpu.Microseconds())/float64(max(got.completed, 1)), got.completed, got.aborted,
			ms(got.late.percentile(50)), ms(got.late.percentile(99)), ms(got.late.percentile(100)),
			ms(floor.percentile(50)), ms(floor.percentile(99)), ms(floor.percentile(100)),
			ms(got.fanOut.percentile(50)), ms(got.fanOut.percentile(99)), ms(got.fanOut.percentile(100)),
			ms(got.scheduled.percentile(50)), ms(got.scheduled.percentile(99)), ms(got.scheduled.percentile(100)))
	}
	b.ReportMetric(0, "ns/op")
}

// buildCairn builds the cairn binary of this tree into a temporary directory.
func buildCairn(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "cairn")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cairn-stream/cairn/cmd/cairn").CombinedOutput()
	if err != nil {
		b.Fatalf("build cairn: %v\n%s", err, out)
	}
	return bin
}

// gapRecorder turns arrival times per key into lateness samples (gap − interval).
type gapRecorder struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]arrivedAt
	record   bool
	late     sample
}

// arrivedAt is the newest message counted for a key: its number and arrival.
type arrivedAt struct {
	n  uint64
	at time.Time
}

func newGapRecorder(interval time.Duration) *gapRecorder {
	return &gapRecorder{interval: interval, last: map[string]arrivedAt{}}
}

// arrived counts message n of key at at; a message not newer than the last counted one
// (a barrier sent again to an instance that had not acked) is no new gap.
func (g *gapRecorder) arrived(key string, n uint64, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	prev, ok := g.last[key]
	if ok && n <= prev.n {
		return
	}
	if ok && g.record {
		g.late = append(g.late, at.Sub(prev.at)-g.interval)
	}
	g.last[key] = arrivedAt{n, at}
}

// measure records between start and stop and returns what it recorded.
func (g *gapRecorder) start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.record = true
}

func (g *gapRecorder) stop() sample {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.record = false
	return g.late
}

// timerFloor runs the timer fan-out (startFanOut) alone and returns the lateness its
// subscriber sees over the window.
func timerFloor(b *testing.B, srv *natstest.Server, shape fleetShape) sample {
	b.Helper()
	f := startFanOut(b, srv, shape)
	waitFor(b, 2*shape.interval+time.Second)
	f.rec.start()
	waitFor(b, shape.window)
	return f.stop()
}

// fanOut is one Go timer per job publishing a core message every interval on one
// connection, and a subscriber on another recording the gaps: what NATS and the machine
// add by themselves.
type fanOut struct {
	rec    *gapRecorder
	timers []*time.Timer
	sub    *nats.Subscription
}

// startFanOut starts the timers, spread evenly over one interval; the caller starts
// recording.
func startFanOut(b *testing.B, srv *natstest.Server, shape fleetShape) *fanOut {
	b.Helper()
	pub, sub := srv.Connect(b), srv.Connect(b)
	f := &fanOut{rec: newGapRecorder(shape.interval), timers: make([]*time.Timer, shape.jobs)}
	var n atomic.Uint64
	var err error
	f.sub, err = sub.Subscribe("floor.>", func(m *nats.Msg) { f.rec.arrived(m.Subject, n.Add(1), time.Now()) })
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		b.Fatal(err)
	}
	for i := range shape.jobs {
		subject := fmt.Sprintf("floor.job-%d", i)
		// Created stopped, started once every timer exists: fire re-arms its own timer.
		f.timers[i] = time.AfterFunc(time.Hour, func() {
			_ = pub.Publish(subject, nil)
			f.timers[i].Reset(shape.interval)
		})
		f.timers[i].Stop()
	}
	for i, t := range f.timers {
		t.Reset(time.Duration(i) * shape.interval / time.Duration(shape.jobs))
	}
	return f
}

// stop ends the recording and the timers and returns what was recorded.
func (f *fanOut) stop() sample {
	late := f.rec.stop()
	for _, t := range f.timers {
		t.Stop()
	}
	_ = f.sub.Unsubscribe()
	return late
}

// waitFor blocks for d or until the benchmark's context ends; a measurement window, not a
// synchronisation.
func waitFor(b *testing.B, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.Context().Done():
		b.Fatal("benchmark cancelled")
	}
}

// fleetResult is what runFleet measured.
type fleetResult struct {
	cpu                time.Duration
	cpuShare           float64
	completed, aborted int64
	// late is the barriers' lateness as received, scheduled as the coordinator's own
	// trigger times in the barriers show it (without the delivery).
	late, scheduled sample
	// fanOut is the timer fan-out's lateness measured alongside, in the same window: the
	// floor under the load of the run.
	fanOut sample
}

// runFleet starts the simulated operators and a coordinator process, waits until every
// job has completed a checkpoint, and measures one window.
func runFleet(b *testing.B, srv *natstest.Server, js jetstream.JetStream, res *cairnjs.Resources, bin string, shape fleetShape) fleetResult {
	b.Helper()
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	subjects := cairnjs.Subjects{}
	job := func(i int) string { return fmt.Sprintf("fleet-%d", i) }
	fan := startFanOut(b, srv, shape)
	defer fan.stop()

	// Config: every job at the interval, published as configsvc would.
	cfg := messages.DefaultConfig()
	cfg.Interval = shape.interval
	for i := range shape.jobs {
		data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job(i), Version: 1, Config: cfg, Time: time.Now().UTC()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.Publish(ctx, subjects.ConfigEvents(job(i)), data); err != nil {
			b.Fatal(err)
		}
	}

	// Simulated instances: registrations renewed every TTL/3, acks for every barrier. The
	// subscription's handler only stamps a barrier's arrival; workers decode it and send
	// the acks, so that a burst of barriers is not stamped late by the acks of the ones
	// before it (the floor's handler does nothing else either).
	sim := srv.Connect(b)
	rec := newGapRecorder(shape.interval)
	sched := newGapRecorder(shape.interval)
	var acks, ackErrs atomic.Int64
	arrivals := make(chan arrival[[]byte], 1<<14)
	for range simWorkers {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case a := <-arrivals:
					if err := ackBarrier(sim, shape, a, rec, sched); err != nil {
						ackErrs.Add(1)
						continue
					}
					acks.Add(int64(shape.instances))
				}
			}
		}()
	}
	barriers, err := sim.Subscribe(subjects.Barrier("*"), func(m *nats.Msg) {
		select {
		case arrivals <- arrival[[]byte]{at: time.Now(), msg: m.Data}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = barriers.Unsubscribe() }()
	var completed, aborted atomic.Int64
	seen := sync.Map{}
	var jobsDone atomic.Int64
	events, err := sim.Subscribe(subjects.CheckpointEvent("*", "*"), func(m *nats.Msg) {
		switch {
		case strings.HasSuffix(m.Subject, ".completed"):
			completed.Add(1)
			job, _, _ := subjects.ParseCheckpointEvent(m.Subject)
			if _, loaded := seen.LoadOrStore(job, true); !loaded {
				jobsDone.Add(1)
			}
		case strings.HasSuffix(m.Subject, ".aborted"):
			aborted.Add(1)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = events.Unsubscribe() }()
	if err := sim.Flush(); err != nil {
		b.Fatal(err)
	}
	st, err := res.Leases.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	go heartbeatFleet(ctx, js, shape, job, st.TTL()/3)

	coord := exec.CommandContext(ctx, bin, "coordinator")
	coord.Env = append(os.Environ(), "NATS_URL="+srv.URL, "LOG_LEVEL=warn")
	coord.Stderr = os.Stderr
	if err := coord.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = coord.Process.Signal(os.Interrupt)
		_ = coord.Wait()
	}()

	deadline := time.Now().Add(time.Minute + time.Duration(shape.jobs)*20*time.Millisecond)
	for jobsDone.Load() < int64(shape.jobs) {
		if time.Now().After(deadline) {
			b.Fatalf("after %s only %d of %d jobs completed a checkpoint", time.Until(deadline), jobsDone.Load(), shape.jobs)
		}
		waitFor(b, 100*time.Millisecond)
	}
	waitFor(b, shape.interval)

	c0, a0 := completed.Load(), aborted.Load()
	cpu0 := procCPU(b, coord.Process.Pid)
	start := time.Now()
	rec.start()
	sched.start()
	fan.rec.start()
	waitFor(b, shape.window)
	late, scheduled, fanLate := rec.stop(), sched.stop(), fan.stop()
	cpu := procCPU(b, coord.Process.Pid) - cpu0
	elapsed := time.Since(start)
	if n := ackErrs.Load(); n > 0 {
		b.Fatalf("simulator failed %d times to decode a barrier or send an ack", n)
	}
	return fleetResult{
		cpu: cpu, cpuShare: float64(cpu) / float64(elapsed),
		completed: completed.Load() - c0, aborted: aborted.Load() - a0, late: late, scheduled: scheduled, fanOut: fanLate,
	}
}

// simWorkers is how many goroutines of the simulator decode barriers and send acks.
const simWorkers = 2

// ackBarrier records a barrier's arrival (rec) and its trigger time (sched) and acks it
// for every simulated instance.
func ackBarrier(sim *nats.Conn, shape fleetShape, a arrival[[]byte], rec, sched *gapRecorder) error {
	var br messages.Barrier
	if err := messages.Unmarshal(a.msg, &br); err != nil {
		return err
	}
	rec.arrived(br.Job, br.CheckpointID, a.at)
	sched.arrived(br.Job, br.CheckpointID, br.TriggeredAt)
	for k := range shape.instances {
		inst := fmt.Sprintf("op-%d", k)
		data, err := messages.Marshal(&messages.Ack{
			Schema: messages.SchemaVersion, Job: br.Job, CheckpointID: br.CheckpointID, Instance: inst,
			Incarnation: "sim-" + inst, Kind: messages.AckDone,
			Snapshot:  messages.SnapshotRef{Object: cairnjs.ObjectName(br.Job, br.CheckpointID, inst, "sim"), Size: 64, Digest: "SHA-256=sim"},
			Positions: map[string]uint64{cairnjs.InputStream: br.CheckpointID},
		})
		if err != nil {
			return err
		}
		if err := sim.Publish(cairnjs.Subjects{}.InstanceAck(br.Job, inst), data); err != nil {
			return err
		}
	}
	return nil
}

// heartbeatFleet keeps every simulated instance registered until ctx ends: every period
// it puts every registration into CAIRN_LEASES (a KV put is a JetStream publish on
// $KV.<bucket>.<key>), asynchronously, so that renewing thousands of keys costs the
// simulator no round trip each.
func heartbeatFleet(ctx context.Context, js jetstream.JetStream, shape fleetShape, job func(int) string, every time.Duration) {
	type reg struct {
		subject string
		data    []byte
	}
	regs := make([]reg, 0, shape.jobs*shape.instances)
	for i := range shape.jobs * shape.instances {
		inst := fmt.Sprintf("op-%d", i%shape.instances)
		data, _ := messages.Marshal(&messages.Registration{
			Schema: messages.SchemaVersion, Job: job(i / shape.instances), Instance: inst,
			Incarnation: "sim-" + inst, StartedAt: time.Now().UTC(),
		})
		regs = append(regs, reg{"$KV." + cairnjs.LeaseBucket + "." + cairnjs.RegistrationKey(job(i/shape.instances), inst), data})
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		for _, r := range regs {
			if _, err := js.PublishAsync(r.subject, r.data); err != nil && ctx.Err() != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-js.PublishAsyncComplete():
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// procCPU returns the user + system CPU time of process pid.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (in parentheses, which may contain spaces).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", pid, data)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}
