package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// BenchmarkIdleJobs measures what jobs without a registered instance cost one
// coordinator process (`cairn coordinator`, built from this tree): CAIRN_IDLE_JOBS (10 000
// by default) config events are published, the coordinator is started and reads them
// all, and then, over a window (CAIRN_IDLE_WINDOW, 30 s by default), its CPU (user +
// system, from /proc) and the messages the lease bucket receives are measured. Idle jobs
// hold no lease and run no timer: the only lease bucket writes are the replica's own
// announcement, one every TTL/3. Goal: under 1 % of a core.
//
// It runs only with CAIRN_IDLE=1, or scaled down (1000 jobs, a 5 s window) in the short
// mode (-short):
//
//	CAIRN_IDLE=1 go test -run '^$' -bench IdleJobs -benchtime=1x -timeout 10m ./tests/bench/
func BenchmarkIdleJobs(b *testing.B) {
	if os.Getenv("CAIRN_IDLE") != "1" && !testing.Short() {
		b.Skip("set CAIRN_IDLE=1 to run the idle jobs benchmark (a minute), or -short for the short mode")
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc to read the coordinator's CPU time")
	}
	jobs, window := 10000, 30*time.Second
	if testing.Short() {
		jobs, window = 1000, 5*time.Second
	}
	if v := os.Getenv("CAIRN_IDLE_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("CAIRN_IDLE_JOBS=%q: want a positive integer", v)
		}
		jobs = n
	}
	if v := os.Getenv("CAIRN_IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			b.Fatalf("CAIRN_IDLE_WINDOW=%q: want a duration of at least 1s", v)
		}
		window = d
	}
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
	subjects := cairnjs.Subjects{}
	job := func(i int) string { return fmt.Sprintf("idle-%d", i) }
	cfg := messages.DefaultConfig()
	for i := range jobs {
		data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job(i), Version: 1, Config: cfg, Time: time.Now().UTC()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(subjects.ConfigEvents(job(i)), data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("config events not all acknowledged within a minute")
	}
	leases, err := js.Stream(ctx, "KV_"+cairnjs.LeaseBucket)
	if err != nil {
		b.Fatal(err)
	}
	leaseSeq := func() uint64 {
		info, err := leases.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return info.State.LastSeq
	}
	st, err := res.Leases.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}

	for range b.N {
		coord := exec.CommandContext(ctx, bin, "coordinator")
		coord.Env = append(os.Environ(), "NATS_URL="+srv.URL, "LOG_LEVEL=warn")
		coord.Stderr = os.Stderr
		if err := coord.Start(); err != nil {
			b.Fatal(err)
		}
		started := time.Now()
		// Read: the last job's status answers with its config.
		last := job(jobs - 1)
		natstest.Eventually(b, time.Minute, "the coordinator reads every config", func() bool {
			m := natstest.Request(b, nc, subjects.Status(last), nil, time.Minute)
			var s messages.Status
			return m.Header.Get("Nats-Service-Error-Code") == "" && json.Unmarshal(m.Data, &s) == nil && s.Config.Version == 1
		})
		ready := time.Since(started)
		waitFor(b, 2*time.Second) // let the start-up burst end
		seq0, cpu0 := leaseSeq(), procCPU(b, coord.Process.Pid)
		start := time.Now()
		waitFor(b, window)
		cpu, writes, elapsed := procCPU(b, coord.Process.Pid)-cpu0, leaseSeq()-seq0, time.Since(start)
		_ = coord.Process.Signal(os.Interrupt)
		_ = coord.Wait()

		share := float64(cpu) / float64(elapsed)
		b.ReportMetric(share*100, "cpu_%core")
		b.ReportMetric(float64(writes), "lease_msgs")
		b.ReportMetric(ready.Seconds(), "start_s")
		b.Logf("%d idle jobs: coordinator read them in %s; over %s it used %s of CPU (%.2f %% of a core) and the lease bucket received %d messages (its announcement, every %s)",
			jobs, ready.Round(time.Millisecond), elapsed.Round(time.Millisecond), cpu, share*100, writes, st.TTL()/3)
		if share >= 0.01 {
			b.Errorf("idle jobs cost %.2f %% of a core, want under 1 %%", share*100)
		}
		if maxWrites := uint64(elapsed/(st.TTL()/3)) + 2; writes > maxWrites {
			b.Errorf("the lease bucket received %d messages, want at most %d (the replica's announcements)", writes, maxWrites)
		}
	}
	b.ReportMetric(0, "ns/op")
}
