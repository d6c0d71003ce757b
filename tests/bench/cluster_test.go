package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/embedded"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/services/aggregator"
	"github.com/cairn-stream/cairn/services/configsvc"
	"github.com/cairn-stream/cairn/services/coordinator"
)

// job is the job every benchmark checkpoints; each benchmark has a server of its own.
const job = "bench"

// waitTimeout bounds every wait for the system under test; reaching it fails the benchmark
// (something is broken), it is not a speed limit.
const waitTimeout = 30 * time.Second

// cluster is Cairn running in this process on one embedded nats-server with file storage
// and the limits of `cairn dev` (4 GiB of file store: CAIRN_OUTPUT and CAIRN_SNAPSHOTS
// reserve 1 GiB each, and a benchmark's own streams need room beside them), every service
// on a connection of its own.
type cluster struct {
	b        *testing.B
	srv      *natstest.Server
	subjects cairnjs.Subjects
	// nc sends the benchmark's requests; obs receives what it observes.
	nc  *nats.Conn
	obs *nats.Conn
	res *cairnjs.Resources
}

func newCluster(b *testing.B) *cluster {
	b.Helper()
	srv := natstest.StartWith(b, embedded.Options{})
	nc, _, res := srv.Resources(b, cairnjs.Options{})
	return &cluster{b: b, srv: srv, nc: nc, obs: srv.Connect(b), res: res}
}

// snapshots returns the job's snapshot store, creating it as the coordinator does.
func (c *cluster) snapshots() jetstream.ObjectStore {
	c.b.Helper()
	js, err := jetstream.New(c.nc)
	if err != nil {
		c.b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	obs, err := cairnjs.EnsureSnapshotStore(ctx, js, cairnjs.Options{}, job)
	if err != nil {
		c.b.Fatalf("snapshot store of %s: %v", job, err)
	}
	return obs
}

// connect opens a connection of its own, closed when the benchmark ends.
func (c *cluster) connect() (*nats.Conn, jetstream.JetStream) {
	c.b.Helper()
	nc := c.srv.Connect(c.b)
	js, err := jetstream.New(nc)
	if err != nil {
		c.b.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// serve runs a service until the benchmark ends, then stops it and waits for Run.
func (c *cluster) serve(name string, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	c.b.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				c.b.Errorf("%s: Run: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			c.b.Errorf("%s did not stop within 15s", name)
		}
	})
}

func (c *cluster) startConfigsvc() {
	c.b.Helper()
	nc, js := c.connect()
	svc, err := configsvc.New(configsvc.DefaultConfig(), nc, js, c.res.Config, zerolog.Nop())
	if err != nil {
		c.b.Fatalf("configsvc: %v", err)
	}
	c.serve("configsvc", svc.Run)
}

func (c *cluster) startCoordinator() {
	c.b.Helper()
	nc, js := c.connect()
	svc, err := coordinator.New(coordinator.DefaultConfig(), nc, js, c.res, zerolog.Nop())
	if err != nil {
		c.b.Fatalf("coordinator: %v", err)
	}
	c.serve("coordinator", svc.Run)
}

// startAggregator runs a reference operator instance.
func (c *cluster) startAggregator(instance string) {
	c.b.Helper()
	nc, _ := c.connect()
	svc, err := aggregator.NewService(aggregator.DefaultConfig(job, instance), nc, zerolog.Nop())
	if err != nil {
		c.b.Fatalf("operator %s: %v", instance, err)
	}
	c.serve(instance, svc.Run)
}

// startOperator runs an operator runtime driving m.
func (c *cluster) startOperator(instance string, m op.Machine) *op.Runtime {
	c.b.Helper()
	nc, _ := c.connect()
	rt, err := op.New(nc, op.DefaultConfig(job, instance), m)
	if err != nil {
		c.b.Fatalf("operator %s: %v", instance, err)
	}
	c.serve(instance, rt.Run)
	return rt
}

// request sends a request to a Cairn service, retrying while it has no responder yet. It
// returns the error code of an error reply ("" for success) and decodes a success into out.
func (c *cluster) request(subject, body string, out any) string {
	c.b.Helper()
	reply := natstest.Request(c.b, c.nc, subject, []byte(body), waitTimeout)
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		return code
	}
	if err := json.Unmarshal(reply.Data, out); err != nil {
		c.b.Fatalf("reply to %s %q: %v", subject, reply.Data, err)
	}
	return ""
}

// set sends a config change for the job through configsvc and returns the config in force.
func (c *cluster) set(body string) messages.ConfigView {
	c.b.Helper()
	var v messages.ConfigView
	if code := c.request(c.subjects.ConfigSet(job), body, &v); code != "" {
		c.b.Fatalf("set %s: error %s", body, code)
	}
	return v
}

// status asks the coordinator for the job's status; ok is false while it does not know
// the job.
func (c *cluster) status() (st messages.Status, ok bool) {
	c.b.Helper()
	switch code := c.request(c.subjects.Status(job), "", &st); code {
	case "":
		return st, true
	case "404":
		return st, false
	default:
		c.b.Fatalf("status: error %s", code)
	}
	return st, false
}

// waitStatus polls the job's status until cond holds. It is used between measurements
// only, never inside a timed interval.
func (c *cluster) waitStatus(what string, cond func(messages.Status) bool) messages.Status {
	c.b.Helper()
	var st messages.Status
	natstest.Eventually(c.b, waitTimeout, what, func() bool {
		var ok bool
		st, ok = c.status()
		return ok && cond(st)
	})
	return st
}

// leading reports whether the answering coordinator holds the job's lease and sees n
// registered instances.
func leading(n int) func(messages.Status) bool {
	return func(st messages.Status) bool {
		return st.Holder != "" && st.Holder == st.Coordinator && len(st.Instances) == n
	}
}

// arrival is a message as the benchmark received it.
type arrival[T any] struct {
	at  time.Time
	msg T
}

// follow subscribes to subject on the observing connection, decoding every message, and
// returns the messages with their arrival times.
func follow[T any, P interface {
	*T
	messages.Message
}](c *cluster, subject string) <-chan arrival[P] {
	c.b.Helper()
	ch := make(chan arrival[P], 4096)
	sub, err := c.obs.Subscribe(subject, func(m *nats.Msg) {
		at := time.Now()
		v := P(new(T))
		if err := messages.Unmarshal(m.Data, v); err != nil {
			c.b.Errorf("%s: %v", subject, err)
			return
		}
		select {
		case ch <- arrival[P]{at: at, msg: v}:
		default:
			c.b.Errorf("%s: the benchmark fell 4096 messages behind; one dropped", subject)
		}
	})
	if err != nil {
		c.b.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := c.obs.Flush(); err != nil {
		c.b.Fatalf("subscribe %s: %v", subject, err)
	}
	c.b.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// next returns the next value on ch for which ok holds, failing after waitTimeout.
func next[T any](b *testing.B, ch <-chan T, what string, ok func(T) bool) T {
	b.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case v := <-ch:
			if ok(v) {
				return v
			}
		case <-deadline.C:
			b.Fatalf("no %s within %s", what, waitTimeout)
		}
	}
}

// pause is how long the system is left idle before every floor sample and every
// measurement that follows another operation. Both then start from the same state: the
// work that trails an operation (garbage collection, the server's housekeeping) is done, and
// threads are parked, as they are when a config change or a barrier comes after a quiet
// moment. Without it, whichever of the two runs second finds a warmed-up system: on this
// machine that alone halved sub-millisecond latencies.
const pause = 50 * time.Millisecond

// rest leaves the system idle for pause.
func rest() { waitUntil(time.Now().Add(pause)) }

// waitUntil returns at t: the scheduling rule makes some measurements start only once an
// interval has passed.
func waitUntil(t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}
