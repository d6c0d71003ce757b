package operator_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/zlog"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/operatortest"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

const (
	testJob  = "orders"
	waitLong = 15 * time.Second
)

// env is one test's server, connection and resources, playing the coordinator.
type env struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	res   *cairnjs.Resources
	subj  cairnjs.Subjects
	logs  *natstest.LogBuffer
	coord *operatortest.Coordinator
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, natstest.Start(t))
}

// newEnvOn is newEnv on a given server.
func newEnvOn(t *testing.T, s *natstest.Server) *env {
	t.Helper()
	nc, js, res := s.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	e := &env{t: t, nc: nc, js: js, res: res, logs: &natstest.LogBuffer{}, coord: operatortest.NewCoordinator(t, nc, testJob)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("operator logs:\n%s", e.logs.String())
		}
	})
	return e
}

// logger logs in the services' JSON shape (through internal/zlog), so that tests can
// look for fields.
func (e *env) logger() *slog.Logger {
	return zlog.New(zerolog.New(e.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger())
}

// newRuntime returns a Runtime for cfg and m that logs into e.logs.
func (e *env) newRuntime(cfg operator.Config, m operator.Machine) *operator.Runtime {
	e.t.Helper()
	cfg.Logger = e.logger()
	rt, err := operator.New(e.nc, cfg, m)
	if err != nil {
		e.t.Fatal(err)
	}
	return rt
}

// logged reports whether one log line contains every part.
func (e *env) logged(parts ...string) bool {
	for line := range strings.Lines(e.logs.String()) {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	e.t.Cleanup(cancel)
	return ctx
}

// running is a Runtime running in the background.
type running struct {
	rt     *operator.Runtime
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	// errTaken is set by result: the test checks the error itself.
	errTaken bool
	once     sync.Once
}

// start runs a Runtime for instance with m and waits until it is ready.
func (e *env) start(instance string, m operator.Machine) *running {
	e.t.Helper()
	return e.startWith(operator.DefaultConfig(testJob, instance), m)
}

// startWith runs a Runtime with cfg and m and waits until it is ready.
func (e *env) startWith(cfg operator.Config, m operator.Machine) *running {
	e.t.Helper()
	rt := e.newRuntime(cfg, m)
	return e.run(rt, rt.Run)
}

// startErr runs a Runtime with cfg and m, which must fail to start, and returns its error.
func (e *env) startErr(cfg operator.Config, m operator.Machine) error {
	e.t.Helper()
	rt := e.newRuntime(cfg, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			e.t.Fatal("Run = nil, want it to refuse to start")
		}
		return err
	case <-rt.Ready():
		cancel()
		<-done
		e.t.Fatal("the runtime started, want it to refuse to start")
	case <-time.After(waitLong):
		e.t.Fatal("Run neither started nor refused to")
	}
	return nil
}

// run runs fn (the Run of rt or of a Service around it) and waits until rt is ready.
func (e *env) run(rt *operator.Runtime, fn func(context.Context) error) *running {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = fn(ctx)
		close(r.done)
	}()
	e.t.Cleanup(func() { r.stop(e.t) })
	select {
	case <-rt.Ready():
	case <-r.done:
		e.t.Fatalf("Run returned before it was ready: %v", r.err)
	case <-time.After(waitLong):
		e.t.Fatal("runtime not ready")
	}
	return r
}

// result waits until Run returns on its own and returns its error.
func (r *running) result(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %s", timeout)
	}
	r.errTaken = true
	return r.err
}

// stop cancels Run and checks that it returns nil (unless result took its error).
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case <-r.done:
			if r.err != nil && !r.errTaken {
				t.Errorf("Run = %v, want nil", r.err)
			}
		case <-time.After(waitLong):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

// event is one input event as the test published it.
type event struct {
	key   string
	value int64
}

// publish publishes raw payloads to instance's input subject and returns the last sequence.
func (e *env) publish(instance string, payloads ...[]byte) uint64 {
	e.t.Helper()
	seq, err := natstest.Publish(e.t.Context(), e.js, e.subj.Input(testJob, instance), payloads)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// publishEvents publishes events and adds them to totals.
func (e *env) publishEvents(instance string, totals map[string]messages.KeyTotals, events ...event) uint64 {
	e.t.Helper()
	payloads := make([][]byte, len(events))
	for i, ev := range events {
		payloads[i] = fmt.Appendf(nil, `{"key":%q,"value":%d}`, ev.key, ev.value)
		t := totals[ev.key]
		totals[ev.key] = messages.KeyTotals{Count: t.Count + 1, Sum: t.Sum + ev.value}
	}
	return e.publish(instance, payloads...)
}

// makeEvents returns n events spread over keys, with values from first on.
func makeEvents(n int, first int64, keys ...string) []event {
	evs := make([]event, n)
	for i := range evs {
		evs[i] = event{key: keys[i%len(keys)], value: first + int64(i)}
	}
	return evs
}

// barrier sends the barrier of checkpoint id, without a fencing token.
func (e *env) barrier(id uint64) { e.t.Helper(); e.coord.Barrier(id) }

// barrierWithToken sends the barrier of checkpoint id carrying a coordinator's fencing token.
func (e *env) barrierWithToken(id, token uint64) { e.t.Helper(); e.coord.BarrierWithToken(id, token) }

// nextAck returns the next ack or decline.
func (e *env) nextAck() messages.Ack { e.t.Helper(); return e.coord.NextAck() }

// checkpoint sends barrier id and returns the instance's ack, failing on a decline.
func (e *env) checkpoint(id uint64) messages.Ack { e.t.Helper(); return e.coord.Checkpoint(id) }

// writeManifest writes the manifest of checkpoint id from acks under <job>.<id> and
// <job>.latest, as the coordinator does.
func (e *env) writeManifest(id uint64, acks ...messages.Ack) {
	e.t.Helper()
	e.coord.WriteManifest(id, acks...)
}

// objectDigest downloads an object and returns its size and SHA-256 in the object
// store's form.
func (e *env) objectDigest(name string) (uint64, string) {
	e.t.Helper()
	data, err := e.coord.Snapshots().GetBytes(e.ctx(), name)
	if err != nil {
		e.t.Fatalf("get object %s: %v", name, err)
	}
	sum := sha256.Sum256(data)
	return uint64(len(data)), "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
}

// objects lists the object names in the snapshot store.
func (e *env) objects() []string {
	e.t.Helper()
	infos, err := e.coord.Snapshots().List(e.ctx())
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		e.t.Fatal(err)
	}
	names := make([]string, len(infos))
	for i, in := range infos {
		names[i] = in.Name
	}
	return names
}

// waitPosition waits until the runtime has applied the record at seq.
func waitPosition(t *testing.T, rt *operator.Runtime, seq uint64) {
	t.Helper()
	natstest.Eventually(t, waitLong, fmt.Sprintf("position never reached %d", seq), func() bool {
		return rt.Position() >= seq
	})
}

// aggState reads an Aggregator's state on the processing goroutine.
func aggState(t *testing.T, rt *operator.Runtime, agg *refop.Aggregator) (map[string]messages.KeyTotals, uint64, uint64) {
	t.Helper()
	var keys map[string]messages.KeyTotals
	var rejected, pos uint64
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := rt.Do(ctx, func() { keys, rejected, pos = agg.Keys(), agg.Rejected(), rt.Position() }); err != nil {
		t.Fatal(err)
	}
	return keys, rejected, pos
}

func checkTotals(t *testing.T, got, want map[string]messages.KeyTotals) {
	t.Helper()
	if !maps.Equal(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("totals\n got %s\nwant %s", g, w)
	}
}
