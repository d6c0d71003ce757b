package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
	"github.com/cairn-stream/cairn/services/configsvc"
	"github.com/cairn-stream/cairn/services/coordinator"
)

// testLog is the services' logger: silent unless CAIRN_TEST_LOG is set (to a level).
func testLog() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("CAIRN_TEST_LOG"))
	if os.Getenv("CAIRN_TEST_LOG") == "" || err != nil {
		return zerolog.Nop()
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000", NoColor: true}).Level(lvl).With().Timestamp().Logger()
}

// slowTier skips t unless CAIRN_SLOW=1. A test that runs for most of a minute however
// fast the machine is (it waits out an outage or the coordinator's quiet retention scan)
// belongs to .ci/run's slow tier, not to the README's `go test ./...`; that step names
// each such test in its -run pattern.
func slowTier(t *testing.T, takes string) {
	t.Helper()
	if os.Getenv("CAIRN_SLOW") != "1" {
		t.Skipf("slow tier (%s): runs with CAIRN_SLOW=1, as .ci/run sets it", takes)
	}
}

// leaseTTL is short so that lost instances and leases are noticed quickly in tests.
const leaseTTL = time.Second

var subjects = cairnjs.Subjects{}

// system is Cairn running in this process: configsvc, one coordinator and operators,
// each on its own connection to one embedded nats-server.
type system struct {
	t   *testing.T
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	res *cairnjs.Resources
	// opts are what the resources, and the coordinators' snapshot stores, are created with.
	opts cairnjs.Options
	// connect opens a service's connection, by the service's name.
	connect func(name string) *nats.Conn
	// coordinatorJobs are the jobs the coordinators coordinate; nil: every job.
	coordinatorJobs []string
	// coordLogs holds the messages of the coordinators' warnings and errors.
	coordLogs natstest.LogBuffer

	mu       sync.Mutex
	services map[string]*running
}

type running struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func startSystem(t *testing.T, job string, instances ...string) *system {
	t.Helper()
	return startSystemWith(t, cairnjs.Options{LeaseTTL: leaseTTL}, job, instances...)
}

// startSystemWith is startSystem with the resources created with opts.
func startSystemWith(t *testing.T, opts cairnjs.Options, job string, instances ...string) *system {
	t.Helper()
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, opts)
	s := &system{t: t, srv: srv, nc: nc, js: js, res: res, opts: opts, services: map[string]*running{}}
	s.connect = func(string) *nats.Conn { return srv.Connect(t) }
	t.Cleanup(s.stopAll)
	s.startServices(job, instances...)
	return s
}

// startServices starts configsvc, a coordinator named coordinator and the instances of job.
func (s *system) startServices(job string, instances ...string) {
	s.t.Helper()
	s.start("configsvc", func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, res *cairnjs.Resources) error {
		svc, err := configsvc.New(configsvc.DefaultConfig(), nc, js, res.Config, testLog().With().Str("service", "configsvc").Logger())
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
	s.startCoordinator("coordinator")
	for _, i := range instances {
		s.startOperator(job, i)
	}
}

// start runs a service on its own connection, with resources bound to it, until stop.
func (s *system) start(name string, run func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, res *cairnjs.Resources) error) {
	s.t.Helper()
	s.startConn(name, func(ctx context.Context, nc *nats.Conn) error {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := cairnjs.Ensure(ectx, js, cairnjs.Options{LookupOnly: true})
		ecancel()
		if err != nil {
			return fmt.Errorf("%s: resources: %w", name, err)
		}
		return run(ctx, nc, js, res)
	})
}

// startConn runs a service on its own connection until stop.
func (s *system) startConn(name string, run func(ctx context.Context, nc *nats.Conn) error) {
	s.t.Helper()
	nc := s.connect(name)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{nc: nc, cancel: cancel, done: make(chan error, 1)}
	s.mu.Lock()
	s.services[name] = r
	s.mu.Unlock()
	go func() { r.done <- run(ctx, nc) }()
}

// startCoordinator starts a coordinator whose id is its name.
func (s *system) startCoordinator(name string) {
	s.start(name, func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, res *cairnjs.Resources) error {
		cfg := coordinator.DefaultConfig()
		cfg.ID = name
		cfg.Snapshots = s.opts
		cfg.Jobs = s.coordinatorJobs
		svc, err := coordinator.New(cfg, nc, js, res, s.coordinatorLogger(name))
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}

// coordinatorLogger is a coordinator's logger: testLog's, with the messages of its
// warnings and errors also kept in s.coordLogs.
func (s *system) coordinatorLogger(name string) zerolog.Logger {
	log := testLog()
	if log.GetLevel() == zerolog.Disabled {
		log = zerolog.New(io.Discard).Level(zerolog.WarnLevel)
	}
	return log.Hook(zerolog.HookFunc(func(_ *zerolog.Event, l zerolog.Level, msg string) {
		if l >= zerolog.WarnLevel {
			fmt.Fprintln(&s.coordLogs, msg)
		}
	})).With().Str("service", name).Logger()
}

// coordinatorLog returns the messages of the coordinators' warnings and errors.
func (s *system) coordinatorLog() string { return s.coordLogs.String() }

func (s *system) startOperator(job, instance string) {
	s.startOperatorWith(job, instance, func(*aggregator.Config) {})
}

// snapshots returns job's snapshot store, creating it as the coordinator does when it is
// not there yet.
func (s *system) snapshots(job string) jetstream.ObjectStore {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := cairnjs.EnsureSnapshotStore(ctx, s.js, s.opts, job)
	if err != nil {
		s.t.Fatalf("snapshot store of %s: %v", job, err)
	}
	return obs
}

// take removes a service from the running set and returns it, or nil.
func (s *system) take(name string) *running {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.services[name]
	delete(s.services, name)
	return r
}

// stop stops a service and waits for its Run to return nil.
func (s *system) stop(name string) {
	s.t.Helper()
	r := s.take(name)
	if r == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			s.t.Errorf("%s: Run returned %v", name, err)
		}
	case <-time.After(15 * time.Second):
		s.t.Errorf("%s did not stop within 15s", name)
	}
}

// crash cuts a service off NATS at once, as a killed process would be: nothing it holds
// is released, its lease and registrations must expire. Its goroutines are then stopped.
func (s *system) crash(name string) {
	s.t.Helper()
	r := s.take(name)
	if r == nil {
		s.t.Fatalf("crash %s: not running", name)
	}
	r.nc.Close()
	r.cancel()
	<-r.done
}

func (s *system) stopAll() {
	s.mu.Lock()
	names := make([]string, 0, len(s.services))
	for n := range s.services {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		s.stop(n)
	}
}

// request sends a request and returns the reply, failing the test on transport errors.
func (s *system) request(subject string, body string) *nats.Msg {
	s.t.Helper()
	return natstest.Request(s.t, s.nc, subject, []byte(body), 10*time.Second)
}

// set changes job's config and returns the config in force with its new version.
func (s *system) set(job, body string) messages.ConfigView {
	s.t.Helper()
	m := s.request(subjects.ConfigSet(job), body)
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		s.t.Fatalf("set %s %s: %s %s", job, body, code, m.Data)
	}
	var v messages.ConfigView
	if err := json.Unmarshal(m.Data, &v); err != nil {
		s.t.Fatalf("set reply %q: %v", m.Data, err)
	}
	return v
}

// get returns job's config in force.
func (s *system) get(job string) messages.ConfigView {
	s.t.Helper()
	m := s.request(subjects.ConfigGet(job), "")
	var v messages.ConfigView
	if err := json.Unmarshal(m.Data, &v); err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
		s.t.Fatalf("get %s: %s (%v)", job, m.Data, err)
	}
	return v
}

// status returns the coordinator's status of job once it knows the job; a 503 (no
// coordinator answers for the job right now) is asked again.
func (s *system) status(job string) messages.Status {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st messages.Status
	natstest.Eventually(s.t, 10*time.Second, "coordinator does not know job "+job, func() bool {
		_, err := natstest.RequestJSON(ctx, s.nc, subjects.Status(job), nil, &st)
		if natstest.IsServiceError(err, "404") {
			return false
		}
		if err != nil {
			s.t.Fatalf("status of %s: %v", job, err)
		}
		return true
	})
	return st
}

// barrier is a barrier as received, with its arrival time.
type barrier struct {
	at time.Time
	b  messages.Barrier
}

// barriers subscribes to job's barriers, each delivered once (not again when resent).
func (s *system) barriers(job string) <-chan barrier {
	s.t.Helper()
	ch := make(chan barrier, 1024)
	// A barrier sent again to an instance that has not acked (same id, coordinator and
	// trigger time) is no new barrier; a subscription's callback runs on one goroutine.
	sent := map[uint64]messages.Barrier{}
	sub, err := s.nc.Subscribe(subjects.Barrier(job), func(m *nats.Msg) {
		at := time.Now()
		var b messages.Barrier
		if err := messages.Unmarshal(m.Data, &b); err != nil {
			s.t.Errorf("barrier: %v", err)
			return
		}
		if got := m.Header.Get(messages.HeaderCheckpointID); got != fmt.Sprint(b.CheckpointID) {
			s.t.Errorf("barrier header %s = %q, body id %d", messages.HeaderCheckpointID, got, b.CheckpointID)
		}
		if prev, ok := sent[b.CheckpointID]; ok && prev.Coordinator == b.Coordinator && prev.TriggeredAt.Equal(b.TriggeredAt) {
			return
		}
		sent[b.CheckpointID] = b
		select {
		case ch <- barrier{at: at, b: b}:
		default:
		}
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// events subscribes to job's checkpoint events.
func (s *system) events(job string) <-chan *messages.CheckpointEvent {
	s.t.Helper()
	ch := make(chan *messages.CheckpointEvent, 1024)
	sub, err := s.nc.Subscribe(subjects.CheckpointEvent(job, "*"), func(m *nats.Msg) {
		if m.Subject == subjects.MemberEvents(job) || m.Subject == subjects.Alarms(job) {
			return // member audit and alarm events share the prefix
		}
		var e messages.CheckpointEvent
		if err := messages.Unmarshal(m.Data, &e); err != nil {
			s.t.Errorf("checkpoint event: %v", err)
			return
		}
		select {
		case ch <- &e:
		default:
		}
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// next waits for the next value on ch, failing the test after timeout.
func next[T any](t *testing.T, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("no %s within %s", what, timeout)
	}
	var zero T
	return zero
}

// nextMatching waits for the next value on ch for which ok holds.
func nextMatching[T any](t *testing.T, ch <-chan T, timeout time.Duration, what string, ok func(T) bool) T {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case v := <-ch:
			if ok(v) {
				return v
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, timeout)
		}
	}
}

// waitRegistered waits until the coordinator sees n instances of job.
func (s *system) waitRegistered(job string, n int) {
	s.t.Helper()
	natstest.Eventually(s.t, 10*time.Second, fmt.Sprintf("%d instances of %s registered", n, job), func() bool {
		return len(s.status(job).Instances) == n
	})
}

// publish publishes input events for an instance and returns the totals they add.
func (s *system) publish(job, instance string, from, n int) map[string]messages.KeyTotals {
	s.t.Helper()
	totals := map[string]messages.KeyTotals{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := from; i < from+n; i++ {
		ev := messages.InputEvent{Key: fmt.Sprintf("k%d", i%7), Value: int64(i%13 + 1)}
		data, _ := json.Marshal(ev)
		if _, err := s.js.Publish(ctx, subjects.Input(job, instance), data, jetstream.WithMsgID(fmt.Sprintf("%s-%d", instance, i))); err != nil {
			s.t.Fatalf("publish: %v", err)
		}
		t := totals[ev.Key]
		t.Count++
		t.Sum += ev.Value
		totals[ev.Key] = t
	}
	return totals
}

// operatorState asks an instance for its state.
func (s *system) operatorState(job, instance string) messages.OperatorState {
	s.t.Helper()
	var st messages.OperatorState
	natstest.Eventually(s.t, 10*time.Second, "state of "+instance, func() bool {
		m := s.request(subjects.OperatorState(job, instance), "")
		if m.Header.Get("Nats-Service-Error-Code") != "" {
			return false
		}
		if err := json.Unmarshal(m.Data, &st); err != nil {
			s.t.Fatalf("state reply %q: %v", m.Data, err)
		}
		return true
	})
	return st
}

// register registers a fake instance of job that never acks.
func (s *system) register(job, instance string) {
	s.t.Helper()
	data, err := messages.Marshal(&messages.Registration{Schema: messages.SchemaVersion, Job: job, Instance: instance, Incarnation: "fake", StartedAt: time.Now()})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	put := func() {
		if _, err := s.res.Leases.Put(ctx, cairnjs.RegistrationKey(job, instance), data); err != nil && ctx.Err() == nil {
			s.t.Errorf("register %s: %v", instance, err)
		}
	}
	put()
	go func() {
		tick := time.NewTicker(leaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				put()
			}
		}
	}()
	s.mu.Lock()
	s.services["fake:"+instance] = &running{cancel: cancel, done: closedNil()}
	s.mu.Unlock()
}

// deregister stops a fake instance's heartbeat and deletes its registration.
func (s *system) deregister(job, instance string) {
	s.t.Helper()
	s.stop("fake:" + instance)
	if err := s.res.Leases.Delete(context.Background(), cairnjs.RegistrationKey(job, instance)); err != nil {
		s.t.Fatal(err)
	}
}

func closedNil() chan error {
	ch := make(chan error, 1)
	ch <- nil
	return ch
}

// publishConfig publishes a config event directly, bypassing configsvc.
func (s *system) publishConfig(job string, version uint64, interval time.Duration) {
	s.t.Helper()
	c := messages.DefaultConfig()
	c.Interval = interval
	data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job, Version: version, Config: c, Time: time.Now()})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.js.Publish(context.Background(), subjects.ConfigEvents(job), data); err != nil {
		s.t.Fatal(err)
	}
}

// waitApplied waits until instance has applied n input events.
func (s *system) waitApplied(job, instance string, n int64) {
	s.t.Helper()
	natstest.Eventually(s.t, 15*time.Second, fmt.Sprintf("%s applied %d events", instance, n), func() bool {
		return sumCount(s.operatorState(job, instance).Keys) >= n
	})
}

// wantExact waits until instance has applied as many events as want holds, then checks
// that its per-key counts and sums are exactly want: none missing, none counted twice.
func (s *system) wantExact(job, instance string, want map[string]messages.KeyTotals) {
	s.t.Helper()
	s.waitApplied(job, instance, sumCount(want))
	if got := s.operatorState(job, instance).Keys; !maps.Equal(got, want) {
		s.t.Fatalf("%s holds %v, want %v", instance, got, want)
	}
}
