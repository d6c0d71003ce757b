package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// keyedShape is the workload of BenchmarkKeyedState: keys distinct keys of valueSize-byte
// values, changed fraction changed per checkpoint. CAIRN_KEYED_KEYS and
// CAIRN_KEYED_WINDOW (how long each interval is measured) override the defaults, which
// are 1 M keys and 30 s, or 10 000 keys and 3 s in the short mode (-short).
type keyedShape struct {
	keys   int
	window time.Duration
}

const (
	valueSize = 64
	// changed is the fraction of the keys changed per checkpoint interval.
	changed = 0.01
	// feedTick is how often the feeder publishes a slice of the changes.
	feedTick = 10 * time.Millisecond
	// burstPerKey is how many records per key the throughput figure times: enough for
	// the bursts to span a whole cycle of deltas and a materialization at 100 ms, so
	// that the figure is the steady state, not whichever side of a materialization a
	// short burst fell on.
	burstPerKey = 2
	// restoreSamples is how many restores (and raw gets of the same objects) are timed.
	restoreSamples = 3
)

func keyedFromEnv(b *testing.B) keyedShape {
	s := keyedShape{keys: 1_000_000, window: 30 * time.Second}
	if testing.Short() {
		s = keyedShape{keys: 10_000, window: 3 * time.Second}
	}
	if v := os.Getenv("CAIRN_KEYED_KEYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("CAIRN_KEYED_KEYS=%q: want a number ≥ 1000", v)
		}
		s.keys = n
	}
	if v := os.Getenv("CAIRN_KEYED_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			b.Fatalf("CAIRN_KEYED_WINDOW=%q: want a duration of at least 5s", v)
		}
		s.window = d
	}
	return s
}

// keyName is the key of key index i: "key-" and 7 digits, 11 bytes.
func keyName(i int) string { return fmt.Sprintf("key-%07d", i) }

// kvRecord is an input record: the key, a space, the value.
func kvRecord(i int, rng *rand.Rand) []byte {
	rec := append([]byte(keyName(i)), ' ')
	for range valueSize {
		rec = append(rec, byte('a'+rng.IntN(26)))
	}
	return rec
}

func splitRecord(data []byte) (key, value []byte, err error) {
	i := bytes.IndexByte(data, ' ')
	if i <= 0 {
		return nil, nil, fmt.Errorf("record %q: want <key> <value>", data)
	}
	return data[:i], data[i+1:], nil
}

// keyedKV is the keyed path: each record puts a value into the keyed state store.
type keyedKV struct{}

func (keyedKV) Apply(rec op.Record, st *state.Store) error {
	k, v, err := splitRecord(rec.Data)
	if err == nil {
		st.Put(k, v)
	}
	return err
}

// wholeKV is today's whole-state path on the same workload: a map whose snapshot copies
// it and writes every key, sorted (as the Aggregator does).
type wholeKV struct{ m map[string][]byte }

func (w *wholeKV) Apply(rec op.Record) error {
	k, v, err := splitRecord(rec.Data)
	if err == nil {
		w.m[string(k)] = bytes.Clone(v)
	}
	return err
}

func (w *wholeKV) Snapshot() (op.Snapshot, error) { return wholeSnapshot(maps.Clone(w.m)), nil }

func (w *wholeKV) Restore(r io.Reader) error {
	m := map[string][]byte{}
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		k, err := readChunk(br)
		if err == io.EOF {
			w.m = m
			return nil
		}
		if err != nil {
			return err
		}
		v, err := readChunk(br)
		if err != nil {
			return err
		}
		m[string(k)] = v
	}
}

func readChunk(br *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	_, err = io.ReadFull(br, buf)
	return buf, err
}

type wholeSnapshot map[string][]byte

func (s wholeSnapshot) Persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var buf [binary.MaxVarintLen64]byte
	for _, k := range slices.Sorted(maps.Keys(s)) {
		for _, p := range [][]byte{[]byte(k), s[k]} {
			bw.Write(buf[:binary.PutUvarint(buf[:], uint64(len(p)))])
			bw.Write(p)
		}
	}
	return bw.Flush()
}

func (wholeSnapshot) Release() {}

// kvPath is one of the two paths measured.
type kvPath struct {
	name    string
	machine func() op.Machine
	// fill builds the path's in-memory state of n keys, for the memory figure.
	fill func(n int) any
}

// kvRun is the measurements of one path.
type kvRun struct {
	name string
	// per interval: written/changed over the window, trigger→completed sample, checkpoints.
	intervals []kvInterval
	// records/s with checkpoints every 100ms and with none.
	rateNone, rate100 float64
	// restores timed after the 100 ms window (a chain of deltas, as long as the window
	// left it) and after the bursts (the bursts change every key twice: a new base).
	chainRestore, burstRestore restoreFigures
	// heap after the load, above the heap before, and the raw key+value bytes.
	heap, raw uint64
	// maxHeld is the most bytes CAIRN_SNAPSHOTS held at the end of an interval window.
	maxHeld uint64
}

type kvInterval struct {
	every            time.Duration
	written, changed uint64
	checkpoints      int
	latency          sample
}

// BenchmarkKeyedState compares the keyed state store's incremental checkpoints with
// today's whole-state path on the same workload, in the same run: 1 M keys of 64-byte
// values, 1 % of the keys changed per checkpoint interval, intervals 1 s and 100 ms, a
// real configsvc and coordinator. For each path: bytes written per checkpoint ÷ bytes of
// the entries changed since the previous checkpoint (over the whole window, so
// materializations are averaged in), trigger→completed p50/p99, records/s of a burst of
// burstPerKey records per key with 100 ms checkpoints ÷ with none, restore time ÷ a raw
// object-store get of the same objects (medians of restoreSamples, after the 100 ms window,
// where the chain has deltas, and after the bursts, where it is a new base), heap ÷ raw
// key+value bytes, and the most bytes the snapshot store held. It runs only with
// CAIRN_KEYED=1 and -benchtime=1x (minutes), or scaled down in the short mode (-short);
// CAIRN_KEYED_PATHS=keyed runs one path (a comma-separated list of "keyed" and
// "whole-state"):
//
//	CAIRN_KEYED=1 go test -run '^$' -bench KeyedState -benchtime=1x -timeout 30m ./tests/bench/
func BenchmarkKeyedState(b *testing.B) {
	if os.Getenv("CAIRN_KEYED") != "1" && !testing.Short() {
		b.Skip("set CAIRN_KEYED=1 to run (minutes), or -short for the short mode")
	}
	shape := keyedFromEnv(b)
	paths := []kvPath{
		{name: "keyed", fill: fillStore, machine: func() op.Machine {
			k, err := op.NewKeyed(keyedKV{}, op.KeyedConfig{})
			if err != nil {
				b.Fatal(err)
			}
			return k
		}},
		{name: "whole-state", fill: fillMap, machine: func() op.Machine { return &wholeKV{m: map[string][]byte{}} }},
	}
	if v := os.Getenv("CAIRN_KEYED_PATHS"); v != "" {
		want := strings.Split(v, ",")
		paths = slices.DeleteFunc(paths, func(p kvPath) bool { return !slices.Contains(want, p.name) })
		if len(paths) == 0 {
			b.Fatalf("CAIRN_KEYED_PATHS=%q: want keyed, whole-state or both, comma-separated", v)
		}
	}
	var runs []kvRun
	for b.Loop() {
		for _, p := range paths {
			runs = append(runs, runKV(b, shape, p))
		}
	}
	b.ReportMetric(0, "ns/op")
	for _, r := range runs {
		for _, iv := range r.intervals {
			prefix := fmt.Sprintf("%s-%s-", r.name, iv.every)
			b.ReportMetric(float64(iv.written)/float64(max(iv.changed, 1)), prefix+"written/changed")
			b.ReportMetric(ms(iv.latency.percentile(50)), prefix+"p50-ms")
			b.ReportMetric(ms(iv.latency.percentile(99)), prefix+"p99-ms")
		}
		b.ReportMetric(r.rate100/r.rateNone, r.name+"-rate-ratio")
		b.ReportMetric(float64(r.chainRestore.restore)/float64(r.chainRestore.rawGet), r.name+"-chain-restore/get")
		b.ReportMetric(float64(r.burstRestore.restore)/float64(r.burstRestore.rawGet), r.name+"-restore/get")
		b.ReportMetric(float64(r.heap)/float64(r.raw), r.name+"-heap/raw")
	}
	var sb bytes.Buffer
	fmt.Fprintf(&sb, "\n%d keys × %d B, %.0f%% changed per interval\n", shape.keys, valueSize, 100*changed)
	for _, r := range runs {
		for _, iv := range r.intervals {
			fmt.Fprintf(&sb, "%-11s %5s: %3d ckpts, written/changed %.2f (%d / %d B), trigger→completed p50 %.1f ms p99 %.1f ms\n",
				r.name, iv.every, iv.checkpoints, float64(iv.written)/float64(max(iv.changed, 1)), iv.written, iv.changed,
				ms(iv.latency.percentile(50)), ms(iv.latency.percentile(99)))
		}
		fmt.Fprintf(&sb, "%-11s: records/s %.0f (100ms) / %.0f (none) = %.2f; heap %d / raw %d = %.2f; store held ≤ %d B; restore %s; %s\n",
			r.name, r.rate100, r.rateNone, r.rate100/r.rateNone, r.heap, r.raw, float64(r.heap)/float64(r.raw), r.maxHeld,
			r.chainRestore.describe("after the 100ms window"), r.burstRestore.describe("after the bursts"))
	}
	b.Log(sb.String())
}

// runKV measures one path on a cluster of its own.
func runKV(b *testing.B, shape keyedShape, p kvPath) kvRun {
	c := newCluster(b)
	c.startConfigsvc()
	c.startCoordinator()
	c.set(`{"interval":"24h","retain":3}`)
	run := kvRun{name: p.name, raw: uint64(shape.keys) * uint64(len(keyName(0))+valueSize), heap: heapOf(p.fill, shape.keys)}
	const inst = "kv-0"
	ctx, stopRT := context.WithCancel(context.Background())
	rt, done := startKV(ctx, b, c, inst, p.machine())
	feed := newFeeder(c, inst, shape.keys)

	// Load every key once.
	last, err := feed.publish(shape.keys, func(i int) int { return i })
	if err != nil {
		b.Fatal(err)
	}
	waitApplied(b, rt, last)

	// A first checkpoint holds the load; the windows measure the changes after it.
	c.set(`{"interval":"1s"}`)
	natstest.Eventually(b, 2*waitTimeout, "a checkpoint covering the load", func() bool {
		return latestPosition(b, c, inst) >= last
	})
	acks := follow[messages.Ack](c, c.subjects.InstanceAck(job, "*"))
	events := follow[messages.CheckpointEvent](c, c.subjects.CheckpointEvent(job, "completed"))
	for _, every := range []time.Duration{time.Second, 100 * time.Millisecond} {
		c.set(fmt.Sprintf(`{"interval":%q}`, every))
		perTick := int(float64(shape.keys) * changed * float64(feedTick) / float64(every))
		iv := kvInterval{every: every}
		prev := latestPosition(b, c, inst)
		end := time.Now().Add(shape.window)
		stopFeed := feed.steady(perTick)
		ackPos := map[uint64]uint64{}
		written := map[uint64]uint64{}
	collect:
		for {
			select {
			case a := <-acks:
				ackPos[a.msg.CheckpointID] = a.msg.Positions[cairnjs.InputStream]
				written[a.msg.CheckpointID] = a.msg.Written
			case e := <-events:
				if e.at.After(end) {
					break collect
				}
				pos, ok := ackPos[e.msg.CheckpointID]
				if ok && pos < prev {
					continue // covered by the checkpoint before the window
				}
				iv.latency = append(iv.latency, e.at.Sub(e.msg.TriggeredAt))
				iv.checkpoints++
				iv.written += e.msg.Written
				if ok { // else its changes count with the next checkpoint's
					iv.changed += feed.changedBytes(prev, pos)
					prev = pos
				}
			case <-time.After(waitTimeout):
				b.Fatalf("%s: no checkpoint completed within %s", p.name, waitTimeout)
			}
		}
		if err := stopFeed(); err != nil {
			b.Fatal(err)
		}
		run.maxHeld = max(run.maxHeld, storeBytes(b, c))
		run.intervals = append(run.intervals, iv)
	}

	// Restore from the newest checkpoint of the 100 ms window: its chain.
	run.chainRestore, rt, stopRT, done = timeRestores(b, c, inst, p, rt, stopRT, done)

	// Records per second of a burst, with checkpoints every 100ms and with none.
	c.set(`{"interval":"100ms"}`)
	run.rate100 = feed.burst(b, rt, burstPerKey*shape.keys)
	c.set(`{"interval":"24h"}`)
	c.waitStatus("no checkpoint pending", func(st messages.Status) bool { return len(st.Pending) == 0 })
	run.rateNone = feed.burst(b, rt, burstPerKey*shape.keys)

	// Restore from the newest checkpoint, a base since the bursts.
	run.burstRestore, rt, stopRT, done = timeRestores(b, c, inst, p, rt, stopRT, done)
	stopRT()
	<-done
	return run
}

// restoreFigures are timed restores of one checkpoint and raw gets of its objects.
type restoreFigures struct {
	// restore and rawGet are the medians of restores and rawGets.
	restore, rawGet   time.Duration
	restores, rawGets sample
	bytes             uint64
	objects           int
}

// describe renders the figures for the benchmark's log (one line per path: go test
// truncates a benchmark's log after 10 lines).
func (f restoreFigures) describe(when string) string {
	return fmt.Sprintf("%s: %s / raw get %s (medians of %v / %v) of %d B in %d objects = %.2f, goal 1.5 × get + 100 ms = %s",
		when, f.restore.Round(time.Millisecond), f.rawGet.Round(time.Millisecond), rounded(f.restores), rounded(f.rawGets),
		f.bytes, f.objects, float64(f.restore)/float64(f.rawGet), (3*f.rawGet/2 + 100*time.Millisecond).Round(time.Millisecond))
}

// timeRestores checkpoints once more (covering rt's position), stops rt (stop, done), and
// times restoreSamples restores of that checkpoint, each followed by a raw get of its
// objects; restores and raw gets alternate and their medians are compared (one sample of
// each moved by 2× between runs on the 2-vCPU VM). It returns the figures and the last
// restored runtime, left running.
func timeRestores(b *testing.B, c *cluster, inst string, p kvPath, rt *op.Runtime, stop context.CancelFunc, done <-chan struct{}) (restoreFigures, *op.Runtime, context.CancelFunc, <-chan struct{}) {
	b.Helper()
	c.set(`{"interval":"100ms"}`)
	last := rt.Position()
	var mf messages.Manifest
	natstest.Eventually(b, 2*waitTimeout, "a checkpoint covering the input", func() bool {
		e, err := c.res.Manifests.Get(context.Background(), cairnjs.LatestKey(job))
		if err != nil {
			return false
		}
		if err := messages.Unmarshal(e.Value(), &mf); err != nil {
			b.Fatal(err)
		}
		return mf.Instances[inst].Positions[cairnjs.InputStream] >= last
	})
	c.set(`{"interval":"24h"}`)
	c.waitStatus("no checkpoint pending", func(st messages.Status) bool { return len(st.Pending) == 0 })
	stop()
	<-done
	var f restoreFigures
	refs := mf.Instances[inst].Refs()
	for _, r := range refs {
		f.bytes += r.Size
	}
	f.objects = len(refs)
	for i := range restoreSamples {
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		rt, done = startKV(ctx, b, c, inst, p.machine())
		f.restores = append(f.restores, time.Since(start))
		if rt.Position() < last {
			b.Fatalf("%s: restored position %d, want %d", p.name, rt.Position(), last)
		}
		stop = cancel
		if i < restoreSamples-1 {
			stop()
			<-done
		}
		start = time.Now()
		for _, r := range refs {
			obj, err := c.snapshots().Get(context.Background(), r.Object)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, obj); err != nil {
				b.Fatal(err)
			}
			obj.Close()
		}
		f.rawGets = append(f.rawGets, time.Since(start))
	}
	f.restore, f.rawGet = f.restores.percentile(50), f.rawGets.percentile(50)
	return f, rt, stop, done
}

// startKV runs a runtime for inst driving m until ctx ends, and returns once it is ready.
func startKV(ctx context.Context, b *testing.B, c *cluster, inst string, m op.Machine) (*op.Runtime, <-chan struct{}) {
	nc, _ := c.connect()
	rt, err := op.New(nc, op.DefaultConfig(job, inst), m)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rt.Run(ctx); err != nil {
			b.Errorf("%s: Run: %v", inst, err)
		}
	}()
	select {
	case <-rt.Ready():
	case <-done:
		b.Fatalf("%s stopped before it was ready", inst)
	case <-time.After(5 * time.Minute):
		b.Fatalf("%s not ready within 5 minutes", inst)
	}
	return rt, done
}

// waitApplied waits until rt has applied the record at seq.
func waitApplied(b *testing.B, rt *op.Runtime, seq uint64) {
	b.Helper()
	natstest.Eventually(b, 10*time.Minute, fmt.Sprintf("position %d", seq), func() bool { return rt.Position() >= seq })
}

// fillStore returns a keyed state store of n keys.
func fillStore(n int) any {
	st := state.New()
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range n {
		k, v, _ := splitRecord(kvRecord(i, rng))
		st.Put(k, v)
	}
	st.Capture() // as at a checkpoint: the set of keys changed since is empty
	return st
}

// fillMap returns the whole-state path's map of n keys.
func fillMap(n int) any {
	w := &wholeKV{m: map[string][]byte{}}
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range n {
		_ = w.Apply(op.Record{Data: kvRecord(i, rng)})
	}
	return w
}

// heapOf is the heap that fill's result holds.
func heapOf(fill func(int) any, n int) uint64 {
	before := heapInUse()
	held := fill(n)
	after := heapInUse()
	runtime.KeepAlive(held)
	return after - min(before, after)
}

// latestPosition is inst's input position in the newest manifest, 0 without one.
func latestPosition(b *testing.B, c *cluster, inst string) uint64 {
	e, err := c.res.Manifests.Get(context.Background(), cairnjs.LatestKey(job))
	if err != nil {
		return 0
	}
	var mf messages.Manifest
	if err := messages.Unmarshal(e.Value(), &mf); err != nil {
		b.Fatal(err)
	}
	return mf.Instances[inst].Positions[cairnjs.InputStream]
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// storeBytes is how many bytes the snapshot object store's stream holds.
func storeBytes(b *testing.B, c *cluster) uint64 {
	st, err := c.snapshots().Status(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

// feeder publishes input records for one instance and remembers which key each stream
// sequence changed.
type feeder struct {
	js   jetstream.JetStream
	subj string
	keys int
	rng  *rand.Rand
	mu   sync.Mutex
	// keyAt maps stream sequences (from base on) to key indexes.
	base  uint64
	keyAt []int32
}

func newFeeder(c *cluster, inst string, keys int) *feeder {
	_, js := c.connect()
	return &feeder{js: js, subj: c.subjects.Input(job, inst), keys: keys, rng: rand.New(rand.NewPCG(1, 2))}
}

// publish publishes n records, the i-th for key index key(i), and returns the last
// sequence.
func (f *feeder) publish(n int, key func(int) int) (uint64, error) {
	futures := make([]jetstream.PubAckFuture, 0, 2048)
	idx := make([]int, 0, 2048)
	var last uint64
	flush := func() error {
		for i, fut := range futures {
			select {
			case ack := <-fut.Ok():
				f.record(ack.Sequence, idx[i])
				last = max(last, ack.Sequence)
			case err := <-fut.Err():
				return fmt.Errorf("publish: %w", err)
			}
		}
		futures, idx = futures[:0], idx[:0]
		return nil
	}
	for i := range n {
		k := key(i)
		fut, err := f.js.PublishAsync(f.subj, kvRecord(k, f.rng))
		if err != nil {
			return 0, fmt.Errorf("publish: %w", err)
		}
		futures, idx = append(futures, fut), append(idx, k)
		if len(futures) == cap(futures) {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	return last, flush()
}

func (f *feeder) record(seq uint64, key int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.base == 0 {
		f.base = seq
	}
	for uint64(len(f.keyAt)) <= seq-f.base {
		f.keyAt = append(f.keyAt, -1)
	}
	f.keyAt[seq-f.base] = int32(key)
}

// changedBytes is the key and value bytes of the distinct keys the records after from up
// to to changed.
func (f *feeder) changedBytes(from, to uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[int32]bool{}
	for s := max(from+1, f.base); s <= to && s-f.base < uint64(len(f.keyAt)); s++ {
		if k := f.keyAt[s-f.base]; k >= 0 {
			seen[k] = true
		}
	}
	return uint64(len(seen)) * uint64(len(keyName(0))+valueSize)
}

// steady publishes perTick records of random keys every feedTick until stop is called;
// stop returns the first publish error.
func (f *feeder) steady(perTick int) (stop func() error) {
	quit, done := make(chan struct{}), make(chan error, 1)
	go func() {
		tick := time.NewTicker(feedTick)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				done <- nil
				return
			case <-tick.C:
			}
			if _, err := f.publish(perTick, func(int) int { return f.rng.IntN(f.keys) }); err != nil {
				<-quit
				done <- err
				return
			}
		}
	}()
	return func() error { close(quit); return <-done }
}

// burst publishes n records of random keys as fast as it can and returns the records per
// second from the first publish until rt applied the last.
func (f *feeder) burst(b *testing.B, rt *op.Runtime, n int) float64 {
	start := time.Now()
	last, err := f.publish(n, func(int) int { return f.rng.IntN(f.keys) })
	if err != nil {
		b.Fatal(err)
	}
	waitApplied(b, rt, last)
	return float64(n) / time.Since(start).Seconds()
}
