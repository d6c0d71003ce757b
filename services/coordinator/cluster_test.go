package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// testLog is the replicas' logger: silent unless CAIRN_TEST_LOG is set (to a level).
func testLog() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("CAIRN_TEST_LOG"))
	if os.Getenv("CAIRN_TEST_LOG") == "" || err != nil {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000", NoColor: true}).Level(lvl).With().Timestamp().Logger()
}

// cluster is coordinator replicas in this process, each on its own connection to one
// embedded server, with simulated operator instances on the real wire contract.
type cluster struct {
	t   *testing.T
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	res *cairnjs.Resources
	ttl time.Duration

	mu       sync.Mutex
	replicas map[string]*replicaRun
	// barriers are every barrier seen: job → checkpoint id → coordinators that sent it.
	barriers map[string]map[uint64]map[string]bool
	// completed are the completed checkpoint ids per job, in arrival order.
	completed map[string][]uint64
}

type replicaRun struct {
	nc     *nats.Conn
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

func newCluster(t *testing.T, ttl time.Duration) *cluster {
	t.Helper()
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, cairnjs.Options{LeaseTTL: ttl, Memory: true})
	c := &cluster{
		t: t, srv: srv, nc: nc, js: js, res: res, ttl: ttl,
		replicas: map[string]*replicaRun{}, barriers: map[string]map[uint64]map[string]bool{}, completed: map[string][]uint64{},
	}
	subjects := cairnjs.Subjects{}
	if _, err := nc.Subscribe(subjects.Barrier("*"), func(m *nats.Msg) {
		var b messages.Barrier
		if messages.Unmarshal(m.Data, &b) != nil {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.barriers[b.Job] == nil {
			c.barriers[b.Job] = map[uint64]map[string]bool{}
		}
		if c.barriers[b.Job][b.CheckpointID] == nil {
			c.barriers[b.Job][b.CheckpointID] = map[string]bool{}
		}
		c.barriers[b.Job][b.CheckpointID][b.Coordinator] = true
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(subjects.CheckpointEvent("*", "completed"), func(m *nats.Msg) {
		var ev messages.CheckpointEvent
		if messages.Unmarshal(m.Data, &ev) != nil {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.completed[ev.Job] = append(c.completed[ev.Job], ev.CheckpointID)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	return c
}

// start starts coordinator replica id on its own connection, restricted to jobs when
// some are given (Config.Jobs).
func (c *cluster) start(id string, jobs ...string) *Service {
	c.t.Helper()
	svc, nc := c.newService(id, jobs...)
	ctx, cancel := context.WithCancel(context.Background())
	r := &replicaRun{nc: nc, svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	c.mu.Lock()
	c.replicas[id] = r
	c.mu.Unlock()
	return svc
}

// newService returns coordinator replica id, not running, on a connection of its own,
// restricted to jobs when some are given.
func (c *cluster) newService(id string, jobs ...string) (*Service, *nats.Conn) {
	c.t.Helper()
	nc := c.srv.Connect(c.t)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	res, err := cairnjs.Ensure(c.t.Context(), js, cairnjs.Options{LookupOnly: true})
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID, cfg.Jobs = id, jobs
	svc, err := New(cfg, nc, js, res, testLog())
	if err != nil {
		c.t.Fatal(err)
	}
	return svc, nc
}

// stop stops replica id cleanly (it releases its leases and its announcement).
func (c *cluster) stop(id string) {
	c.t.Helper()
	c.mu.Lock()
	r := c.replicas[id]
	delete(c.replicas, id)
	c.mu.Unlock()
	if r == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			c.t.Errorf("replica %s: Run returned %v", id, err)
		}
	case <-time.After(15 * time.Second):
		c.t.Errorf("replica %s did not stop within 15s", id)
	}
}

// crash cuts replica id off NATS at once, as a killed process would be: its leases and
// announcement are not released and must expire. Its goroutines are then stopped.
func (c *cluster) crash(id string) {
	c.t.Helper()
	c.mu.Lock()
	r := c.replicas[id]
	delete(c.replicas, id)
	c.mu.Unlock()
	if r == nil {
		c.t.Fatalf("crash %s: not running", id)
	}
	r.nc.Close()
	r.cancel()
	<-r.done
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	ids := slices.Collect(maps.Keys(c.replicas))
	c.mu.Unlock()
	for _, id := range ids {
		c.stop(id)
	}
}

// configure publishes a config event for each job, as configsvc would.
func (c *cluster) configure(version uint64, interval time.Duration, jobs ...string) {
	c.t.Helper()
	cfg := messages.DefaultConfig()
	cfg.Interval = interval
	cfg.Timeout = 5 * time.Second
	for _, job := range jobs {
		data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job, Version: version, Config: cfg, Time: time.Now().UTC()})
		if err != nil {
			c.t.Fatal(err)
		}
		if _, err := c.js.Publish(c.t.Context(), cairnjs.Subjects{}.ConfigEvents(job), data); err != nil {
			c.t.Fatal(err)
		}
	}
}

// simulate runs an operator instance of job on the wire contract: a registration renewed
// every TTL/3, and an ack for every barrier. It stops when the returned func is called
// (its registration is deleted) or the test ends.
func (c *cluster) simulate(job, instance string) (stop func()) {
	c.t.Helper()
	subjects := cairnjs.Subjects{}
	inc := "sim-" + instance
	reg, err := messages.Marshal(&messages.Registration{Schema: messages.SchemaVersion, Job: job, Instance: instance, Incarnation: inc, StartedAt: time.Now().UTC()})
	if err != nil {
		c.t.Fatal(err)
	}
	key := cairnjs.RegistrationKey(job, instance)
	sub, err := c.nc.Subscribe(subjects.Barrier(job), func(m *nats.Msg) {
		var b messages.Barrier
		if messages.Unmarshal(m.Data, &b) != nil {
			return
		}
		data, err := messages.Marshal(&messages.Ack{
			Schema: messages.SchemaVersion, Job: job, CheckpointID: b.CheckpointID, Instance: instance, Incarnation: inc, Kind: messages.AckDone,
			Snapshot:  messages.SnapshotRef{Object: cairnjs.ObjectName(job, b.CheckpointID, instance, "sim"), Size: 1, Digest: "SHA-256=sim"},
			Positions: map[string]uint64{cairnjs.InputStream: b.CheckpointID},
		})
		if err == nil {
			_ = c.nc.Publish(subjects.Ack(job), data)
		}
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.res.Leases.Put(c.t.Context(), key, reg); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(c.t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(c.ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = c.res.Leases.Put(ctx, key, reg)
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			_ = sub.Unsubscribe()
			dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer dcancel()
			_ = c.res.Leases.Delete(dctx, key)
		})
	}
	c.t.Cleanup(stop)
	return stop
}

// holders reads who holds each job's lease ("" for none).
func (c *cluster) holders(jobs []string) map[string]string {
	c.t.Helper()
	// A generous deadline: the machine may be busy (-race, other tests).
	ctx, cancel := context.WithTimeout(c.t.Context(), 20*time.Second)
	defer cancel()
	out := make(map[string]string, len(jobs))
	for _, job := range jobs {
		e, err := c.res.Leases.Get(ctx, cairnjs.LeaseKey(job))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			out[job] = ""
			continue
		}
		if err != nil {
			c.t.Fatal(err)
		}
		var l messages.Lease
		if err := messages.Unmarshal(e.Value(), &l); err != nil {
			c.t.Fatal(err)
		}
		out[job] = l.Holder
	}
	return out
}

// counts returns how many of the jobs each replica holds; "" counts the unled ones.
func counts(holders map[string]string) map[string]int {
	n := map[string]int{}
	for _, h := range holders {
		n[h]++
	}
	return n
}

// waitPlaced waits until every job's lease is held as the store.Placement over the replicas
// gives it, and returns how long that took.
func (c *cluster) waitPlaced(jobs []string, replicas []string, within time.Duration) time.Duration {
	c.t.Helper()
	live := map[string][]string{}
	for _, id := range replicas {
		live[id] = nil
	}
	want := place(slices.Sorted(slices.Values(jobs)), live)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got := c.holders(jobs)
		if maps.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			c.t.Fatalf("after %s the leases are not placed on %v: held %v, want %v", within, replicas, counts(got), counts(want))
		}
		<-tick.C
	}
}

// completedCounts returns how many checkpoints each job completed so far.
func (c *cluster) completedCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for j, ids := range c.completed {
		out[j] = len(ids)
	}
	return out
}

// waitProgress waits until every job completed n more checkpoints.
func (c *cluster) waitProgress(jobs []string, n int, within time.Duration) {
	c.t.Helper()
	before := c.completedCounts()
	natstest.Eventually(c.t, within, fmt.Sprintf("every job completes %d more checkpoints", n), func() bool {
		now := c.completedCounts()
		for _, j := range jobs {
			if now[j] < before[j]+n {
				return false
			}
		}
		return true
	})
}

// checkIDs fails the test if a checkpoint id of a job was sent by two coordinators, or
// if completed ids of a job were not strictly increasing.
func (c *cluster) checkIDs() (barriers int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for job, ids := range c.barriers {
		for id, from := range ids {
			barriers++
			if len(from) > 1 {
				c.t.Errorf("job %s: checkpoint id %d issued by %v", job, id, slices.Sorted(maps.Keys(from)))
			}
		}
	}
	for job, ids := range c.completed {
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				c.t.Errorf("job %s: completed ids not strictly increasing: %d after %d", job, ids[i], ids[i-1])
			}
		}
	}
	return barriers
}

// TestStoppedWhileStartingIsAStop: a coordinator whose context ends before it has
// started returns nil from Run, as a stop, not the error of the call it was in.
func TestStoppedWhileStartingIsAStop(t *testing.T) {
	c := newCluster(t, scaleTTL)
	svc, _ := c.newService("early")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := svc.Run(ctx); err != nil {
		t.Fatalf("Run stopped while starting: %v, want nil", err)
	}
}
