package process

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

const (
	// leaseTTL is the TTL of registrations and coordinator leases: short, so that a
	// SIGKILLed instance drops out quickly (its heartbeat is a third of it), and long
	// enough for a loaded 2-core CI machine.
	leaseTTL = 2 * time.Second
	// interval and retain are acceptance 1's: 200 ms, 2 retained checkpoints.
	interval = 200 * time.Millisecond
	retain   = 2
	// keys is how many distinct keys the events spread over.
	keys = 8
)

var subjects = cairnjs.Subjects{}

// buildDir holds the cairn binary, built once per package on first use.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cairn-process-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cairnBin builds ./cmd/cairn once.
var cairnBin = sync.OnceValues(func() (string, error) {
	t := proctest.Cairn(buildDir)
	return t.Out, proctest.BuildErr(t)
})

// panicopBin builds the test operator ./tests/process/panicop once.
var panicopBin = sync.OnceValues(func() (string, error) {
	t := proctest.Target{Out: filepath.Join(buildDir, "panicop"), Pkg: "./tests/process/panicop"}
	return t.Out, proctest.BuildErr(t)
})

// stack is Cairn as separate processes against an embedded nats-server: configsvc, one
// coordinator for the test's job and operator instances, plus what the test published.
type stack struct {
	t   *testing.T
	job string
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	res *cairnjs.Resources
	bin string
	env []string
	dir string // logs
	// opBin, when set, runs the operators instead of `cairn operator`, with the same
	// flags (the test operator panicop).
	opBin string

	configsvc, coordinator *proctest.Proc
	ops                    map[string]*proctest.Proc
	extra                  []*proctest.Proc // further processes (a duplicate instance)
	keys                   int              // how many distinct keys the events spread over

	pubMu     sync.Mutex // held by publish
	mu        sync.Mutex
	values    map[string][]int64 // per instance, the values published in order
	exits     []string           // exits the test did not cause
	completed []messages.CheckpointEvent
	changed   chan struct{} // closed and replaced when a completion arrives
}

// stackOptions shapes a stack.
type stackOptions struct {
	instances []string
	// output makes every operator emit its key updates on cairn.output.<job>.<instance>.
	output bool
	// keys is how many distinct keys the events spread over; 0 means the constant keys.
	keys int
	// outputWindow, when set, is CAIRN_OUTPUT's duplicate window instead of the default.
	outputWindow time.Duration
	// panicop runs the operators with the test operator panicop, which panics on the key
	// "poison", instead of `cairn operator`; opArgs are further flags of every operator.
	panicop bool
	opArgs  []string
	// coordinatorArgs are further flags of the coordinator.
	coordinatorArgs []string
}

// newStack starts the nats-server, configsvc, the coordinator and the operators, sets
// interval 200 ms and retain 2, and waits until every instance is registered and a
// checkpoint has completed.
func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	bin, err := cairnBin()
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, cairnjs.Options{LeaseTTL: leaseTTL})
	if o.outputWindow > 0 {
		if err := natstest.SetDuplicateWindow(t.Context(), js, cairnjs.OutputStream, o.outputWindow); err != nil {
			t.Fatal(err)
		}
	}
	s := &stack{
		t: t, job: jobName(t), srv: srv, nc: nc, js: js, res: res, bin: bin, keys: cmp.Or(o.keys, keys),
		env: proctest.ServiceEnv(srv.URL), dir: t.TempDir(),
		ops: map[string]*proctest.Proc{}, values: map[string][]int64{}, changed: make(chan struct{}),
	}
	if o.panicop {
		if s.opBin, err = panicopBin(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.stop)
	if _, err := nc.Subscribe(subjects.CheckpointEvent(s.job, "completed"), s.onCompleted); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.configsvc = s.proc("configsvc", "configsvc")
	s.coordinator = s.proc("coordinator", append([]string{"coordinator", "--jobs", s.job}, o.coordinatorArgs...)...)
	for _, p := range []*proctest.Proc{s.configsvc, s.coordinator} {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, inst := range o.instances {
		s.ops[inst] = s.operatorProc(inst, inst, o.output, o.opArgs...)
		if err := s.ops[inst].Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	set := time.Now()
	var v messages.ConfigView
	body := fmt.Sprintf(`{"interval":%q,"retain":%d,"timeout":"5s"}`, interval, retain)
	if err := s.request(ctx, subjects.ConfigSet(s.job), []byte(body), &v); err != nil {
		t.Fatalf("set the config: %v", err)
	}
	for _, inst := range o.instances {
		if err := s.ops[inst].WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := proctest.Poll(ctx, 20*time.Millisecond, "every instance registered", func() (bool, error) {
		st, err := s.status(ctx)
		if natstest.IsServiceError(err, "404") {
			return false, nil // the coordinator has not seen the job's config or instances yet
		}
		return len(st.Instances) == len(o.instances), err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.completedAfter(ctx, set); err != nil {
		t.Fatal(err)
	}
	return s
}

// jobName makes a job name of the test's name.
func jobName(t *testing.T) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, t.Name())
	return name[:min(len(name), 64)]
}

// proc prepares a cairn process logging to its own file.
func (s *stack) proc(name string, args ...string) *proctest.Proc {
	s.t.Helper()
	return s.procOf(s.bin, name, args...)
}

// procOf prepares a process of bin logging to its own file.
func (s *stack) procOf(bin, name string, args ...string) *proctest.Proc {
	s.t.Helper()
	p, err := proctest.New(name, filepath.Join(s.dir, name+".log"), bin, s.env, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	p.OnExit = s.exited
	return p
}

// operatorProc prepares a `cairn operator` process (or one of s.opBin) of instance inst,
// named name, with extra flags.
func (s *stack) operatorProc(name, inst string, output bool, extra ...string) *proctest.Proc {
	args := []string{"--job", s.job, "--instance", inst}
	if output {
		args = append(args, "--output", subjects.Output(s.job, inst))
	}
	args = append(args, extra...)
	if s.opBin != "" {
		return s.procOf(s.opBin, name, args...)
	}
	return s.proc(name, append([]string{"operator"}, args...)...)
}

// exited records an exit the test did not cause.
func (s *stack) exited(p *proctest.Proc, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exits = append(s.exits, fmt.Sprintf("%s exited on its own at %s: %v", p.Name, time.Now().Format("15:04:05.000"), err))
}

// unexpected returns the exits the test did not cause, so far.
func (s *stack) unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.exits)
}

// stop stops every process with SIGTERM (each must drain and exit 0); on failure it logs
// the tail of every process's log.
func (s *stack) stop() {
	procs := []*proctest.Proc{}
	for _, inst := range slices.Sorted(maps.Keys(s.ops)) {
		procs = append(procs, s.ops[inst])
	}
	procs = append(procs, s.extra...)
	procs = append(procs, s.coordinator, s.configsvc)
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		if p == nil {
			continue
		}
		wg.Go(func() { errs[i] = p.Terminate(20 * time.Second) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			s.t.Errorf("stopping: %v", err)
		}
	}
	for _, e := range s.unexpected() {
		if !s.t.Failed() {
			s.t.Logf("note: %s", e)
		}
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		if s.t.Failed() {
			s.t.Logf("--- last lines of %s:\n%s", p.Name, p.Tail(15))
		}
		p.Close()
	}
}

func (s *stack) onCompleted(m *nats.Msg) {
	var e messages.CheckpointEvent
	if err := messages.Unmarshal(m.Data, &e); err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completed = append(s.completed, e)
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitEvents waits until found, called with s.mu held on the completions so far, reports
// true.
func (s *stack) waitEvents(ctx context.Context, what string, found func([]messages.CheckpointEvent) bool) error {
	for {
		s.mu.Lock()
		ok, ch := found(s.completed), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

// completions returns how many checkpoint completions have been seen.
func (s *stack) completions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.completed)
}

// completedAfter waits for the completion of a checkpoint triggered after t.
func (s *stack) completedAfter(ctx context.Context, t time.Time) (messages.CheckpointEvent, error) {
	var got messages.CheckpointEvent
	err := s.waitEvents(ctx, "a checkpoint triggered after "+t.Format("15:04:05.000")+" to complete", func(evs []messages.CheckpointEvent) bool {
		for _, e := range evs {
			if e.TriggeredAt.After(t) {
				got = e
				return true
			}
		}
		return false
	})
	return got, err
}

// waitCompletions waits until n completions more than seen have arrived.
func (s *stack) waitCompletions(ctx context.Context, seen, n int) error {
	return s.waitEvents(ctx, fmt.Sprintf("%d completed checkpoints", n), func(evs []messages.CheckpointEvent) bool {
		return len(evs) >= seen+n
	})
}

// request asks until a reply decodes into v, retrying no responders, timeouts and 503s,
// until ctx ends. A reply with another error code is an error.
func (s *stack) request(ctx context.Context, subject string, body []byte, v any) error {
	_, err := natstest.RequestJSON(ctx, s.nc, subject, body, v)
	return err
}

// status asks the coordinator for the job's status.
func (s *stack) status(ctx context.Context) (messages.Status, error) {
	var st messages.Status
	err := s.request(ctx, subjects.Status(s.job), nil, &st)
	return st, err
}

// state asks an operator instance for its state.
func (s *stack) state(ctx context.Context, inst string) (messages.OperatorState, error) {
	var st messages.OperatorState
	err := s.request(ctx, subjects.OperatorState(s.job, inst), nil, &st)
	return st, err
}

// value is the n-th event value of an instance: deterministic, 1 to 100.
func value(inst string, n int) int64 { return 1 + int64((n*37+len(inst)*11+n*n)%100) }

// keyOf is the key of the n-th event of an instance of a stack with the default keys.
func keyOf(n int) string { return keyIn(n, keys) }

// keyOf is the key of the n-th event of an instance of s.
func (s *stack) keyOf(n int) string { return keyIn(n, s.keys) }

// keyIn is the key of the n-th event when events spread over keys keys.
func keyIn(n, keys int) string { return fmt.Sprintf("k%d", n%keys) }

// publish stores n more events for inst, each with a deterministic Nats-Msg-Id, and
// returns the stream sequence of the last one. It may be called from several goroutines.
func (s *stack) publish(ctx context.Context, inst string, n int) (uint64, error) {
	// One publisher at a time: an event's index (its key, value and message id) is the
	// number published before it.
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	var last uint64
	for range n {
		s.mu.Lock()
		i := len(s.values[inst])
		s.mu.Unlock()
		data, err := json.Marshal(messages.InputEvent{Key: s.keyOf(i), Value: value(inst, i)})
		if err != nil {
			return 0, err
		}
		ack, err := s.js.Publish(ctx, subjects.Input(s.job, inst), data, jetstream.WithMsgID(fmt.Sprintf("%s-%d", inst, i)))
		if err != nil {
			return 0, fmt.Errorf("publish event %d of %s: %w", i, inst, err)
		}
		s.mu.Lock()
		s.values[inst] = append(s.values[inst], value(inst, i))
		s.mu.Unlock()
		last = ack.Sequence
	}
	return last, nil
}

// published returns the values published to inst, in order.
func (s *stack) published(inst string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.values[inst])
}

// expected returns the per-key count and sum of what was published to inst.
func (s *stack) expected(inst string) map[string]messages.KeyTotals {
	want := map[string]messages.KeyTotals{}
	for i, v := range s.published(inst) {
		kt := want[s.keyOf(i)]
		kt.Count++
		kt.Sum += v
		want[s.keyOf(i)] = kt
	}
	return want
}

// waitApplied waits until inst's position reaches seq and returns its state.
func (s *stack) waitApplied(ctx context.Context, inst string, seq uint64) (messages.OperatorState, error) {
	var st messages.OperatorState
	err := proctest.Poll(ctx, 20*time.Millisecond, fmt.Sprintf("%s to apply its input up to sequence %d", inst, seq), func() (bool, error) {
		var err error
		st, err = s.state(ctx, inst)
		return st.Position >= seq, err
	})
	if err != nil {
		err = fmt.Errorf("%w (position %d, %d events counted)", err, st.Position, total(st))
	}
	return st, err
}

// total counts the events a state has counted.
func total(st messages.OperatorState) int64 {
	var n int64
	for _, kt := range st.Keys {
		n += kt.Count
	}
	return n
}

// exact compares inst's state with what was published to it and names every difference.
func (s *stack) exact(inst string, st messages.OperatorState) []string {
	want := s.expected(inst)
	var problems []string
	var wantN int64
	for _, kt := range want {
		wantN += kt.Count
	}
	for _, k := range slices.Sorted(maps.Keys(merge(want, st.Keys))) {
		if w, g := want[k], st.Keys[k]; w != g {
			problems = append(problems, fmt.Sprintf("key %s: count %d sum %d, want count %d sum %d", k, g.Count, g.Sum, w.Count, w.Sum))
		}
	}
	if st.Rejected != 0 {
		problems = append(problems, fmt.Sprintf("%d events rejected", st.Rejected))
	}
	if problems != nil {
		problems = append([]string{fmt.Sprintf("%s counted %d events, %d were published", inst, total(st), wantN)}, problems...)
	}
	return problems
}

func merge(a, b map[string]messages.KeyTotals) map[string]messages.KeyTotals {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}

// assertExact waits until inst has applied up to seq and fails the test unless its
// totals equal what was published.
func (s *stack) assertExact(ctx context.Context, inst string, seq uint64) {
	s.t.Helper()
	st, err := s.waitApplied(ctx, inst, seq)
	if err != nil {
		s.t.Fatal(err)
	}
	if p := s.exact(inst, st); p != nil {
		s.t.Fatalf("%s is not exact:\n  %s", inst, strings.Join(p, "\n  "))
	}
}

// manifest reads the manifest under key (<job>.latest or <job>.<id>).
func (s *stack) manifest(ctx context.Context, key string) (messages.Manifest, error) {
	var m messages.Manifest
	e, err := s.res.Manifests.Get(ctx, key)
	if err != nil {
		return m, fmt.Errorf("manifest %s: %w", key, err)
	}
	if err := messages.Unmarshal(e.Value(), &m); err != nil {
		return m, fmt.Errorf("manifest %s: %w", key, err)
	}
	return m, nil
}

// waitCovered waits until the newest manifest holds a snapshot inst took itself (not
// carried forward) that includes its input up to seq, and returns that manifest.
func (s *stack) waitCovered(ctx context.Context, inst string, seq uint64) (messages.Manifest, error) {
	var m messages.Manifest
	err := proctest.Poll(ctx, 20*time.Millisecond, fmt.Sprintf("a completed checkpoint covering %s up to sequence %d", inst, seq), func() (bool, error) {
		var err error
		m, err = s.manifest(ctx, s.job+".latest")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		is, ok := m.Instances[inst]
		return ok && is.From(m.CheckpointID) == m.CheckpointID && is.Positions[cairnjs.InputStream] >= seq, nil
	})
	return m, err
}

// snapshots returns the job's snapshot store, which the coordinator created.
func (s *stack) snapshots(ctx context.Context) jetstream.ObjectStore {
	s.t.Helper()
	obs, err := s.js.ObjectStore(ctx, cairnjs.SnapshotStore(s.job))
	if err != nil {
		s.t.Fatalf("snapshot store of %s: %v", s.job, err)
	}
	return obs
}

// retained returns the manifests the coordinator retains under the stack's config: the
// newest retain of the job's manifests, oldest first. The others are retained out: a
// retention pass, paced (docs/semantics.md, Retention), deletes them and their objects at
// any moment, and trimming does not keep their input.
func (s *stack) retained(ctx context.Context) ([]messages.Manifest, error) {
	ms, err := s.manifests(ctx)
	if err != nil {
		return nil, err
	}
	return ms[max(len(ms)-retain, 0):], nil
}

// manifests returns every manifest (<job>.<id>) still in CAIRN_MANIFESTS, retained or
// waiting for a retention pass, oldest first.
func (s *stack) manifests(ctx context.Context) ([]messages.Manifest, error) {
	keys, err := natstest.Keys(ctx, s.res.Manifests, s.job+".*")
	if err != nil {
		return nil, err
	}
	var out []messages.Manifest
	for _, k := range keys {
		if _, err := strconv.ParseUint(strings.TrimPrefix(k, s.job+"."), 10, 64); err != nil {
			continue // <job>.latest, the id counter
		}
		m, err := s.manifest(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted by retention meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b messages.Manifest) int { return int(a.CheckpointID) - int(b.CheckpointID) })
	return out, nil
}

// purge removes every message of inst's input subject.
func (s *stack) purge(ctx context.Context, inst string) {
	s.t.Helper()
	if err := s.res.Input.Purge(ctx, jetstream.WithPurgeSubject(subjects.Input(s.job, inst))); err != nil {
		s.t.Fatalf("purge the input of %s: %v", inst, err)
	}
}

// firstSeq returns the first stream sequence left on subject in CAIRN_INPUT, 0 when the
// subject holds none.
func (s *stack) firstSeq(ctx context.Context, subject string) (uint64, error) {
	return natstest.FirstSeq(ctx, s.res.Input, subject)
}

// member returns inst's entry in the job's status.
func member(st messages.Status, inst string) (messages.Member, bool) {
	for _, m := range st.Members {
		if m.Instance == inst {
			return m, true
		}
	}
	return messages.Member{}, false
}

// ctxFor returns a context ending after d or with the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// feed publishes burst events for inst every period until the returned stop is called;
// stop waits for the publisher and returns the sequence of the last event stored (the
// same on every call).
func (s *stack) feed(ctx context.Context, inst string, period time.Duration, burst int) (stop func() (uint64, error)) {
	fctx, cancel := context.WithCancel(ctx)
	type result struct {
		last uint64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		var r result
		for {
			select {
			case <-fctx.Done():
				done <- r
				return
			case <-tick.C:
			}
			seq, err := s.publish(ctx, inst, burst)
			if err != nil {
				r.err = err
				done <- r
				return
			}
			r.last = seq
		}
	}()
	return sync.OnceValues(func() (uint64, error) {
		cancel()
		r := <-done
		return r.last, r.err
	})
}

// waitTrimmed waits until the coordinator has trimmed inst's input subject: its first
// sequence is past from, within 20 s. It returns that sequence.
func (s *stack) waitTrimmed(ctx context.Context, inst string, from uint64) (uint64, error) {
	subject := subjects.Input(s.job, inst)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var first uint64
	err := proctest.Poll(ctx, 20*time.Millisecond, fmt.Sprintf("the coordinator to trim %s past sequence %d", subject, from), func() (bool, error) {
		var err error
		first, err = s.firstSeq(ctx, subject)
		return first > from, err
	})
	return first, err
}

// trimBelowRetained purges inst's input subject below the position of the oldest retained
// checkpoint that holds inst, as an administrator (or Cairn) may, and returns the first
// sequence left. Every retained checkpoint still finds its input.
func (s *stack) trimBelowRetained(ctx context.Context, inst string) (uint64, error) {
	ms, err := s.retained(ctx)
	if err != nil {
		return 0, err
	}
	for _, m := range ms {
		is, ok := m.Instances[inst]
		if !ok {
			continue
		}
		pos := is.Positions[cairnjs.InputStream]
		if pos == 0 {
			// WithPurgeSequence(0) would purge the whole subject.
			return 0, fmt.Errorf("the oldest retained checkpoint holding %s (%d) has read nothing of its input", inst, m.CheckpointID)
		}
		subject := subjects.Input(s.job, inst)
		if err := s.res.Input.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(pos)); err != nil {
			return 0, fmt.Errorf("purge %s below %d: %w", subject, pos, err)
		}
		return s.firstSeq(ctx, subject)
	}
	return 0, fmt.Errorf("no retained checkpoint holds %s", inst)
}
