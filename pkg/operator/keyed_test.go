package operator_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// kvMachine applies records "p <key> <value>" (put), "d <key>" (delete) and "i <key>"
// (increments the decimal number under key, 0 when absent): a record applied twice or
// not at all changes the outcome of increments.
type kvMachine struct{}

func (kvMachine) Apply(rec operator.Record, st *state.Store) error {
	f := strings.Fields(string(rec.Data))
	switch {
	case len(f) == 2 && f[0] == "i":
		v, _ := st.Get([]byte(f[1]))
		n, _ := strconv.Atoi(string(v))
		st.Put([]byte(f[1]), []byte(strconv.Itoa(n+1)))
	case len(f) == 3 && f[0] == "p":
		st.Put([]byte(f[1]), []byte(f[2]))
	case len(f) == 2 && f[0] == "d":
		st.Delete([]byte(f[1]))
	default:
		return fmt.Errorf("bad record %q", rec.Data)
	}
	return nil
}

// newKeyed returns a Keyed running a kvMachine.
func newKeyed(t *testing.T, cfg operator.KeyedConfig) operator.Keyed {
	t.Helper()
	k, err := operator.NewKeyed(kvMachine{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// storeContents reads a Keyed's store on the processing goroutine.
func storeContents(t *testing.T, rt *operator.Runtime, k operator.Keyed) map[string]string {
	t.Helper()
	m := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := rt.Do(ctx, func() {
		k.Store().Range(nil, func(key, v []byte) bool {
			m[string(key)] = string(v)
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestKeyedModel is a model-based property test of incremental checkpoints: random puts
// and deletes, checkpoints that complete, abort or never hear their outcome, and restarts
// at random points, with chains bounded tightly so that new bases are written often. After
// every restart the restored state plus the replayed input must equal a plain map that
// saw every record.
func TestKeyedModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 10))
			e := newEnv(t)
			cfg := operator.KeyedConfig{MaxDeltas: 2 + rng.IntN(4), DeltaRatio: []float64{0.3, 1, 3}[rng.IntN(3)]}
			const inst = "kv-0"
			k := newKeyed(t, cfg)
			r := e.start(inst, k)
			model := map[string]string{}
			var last uint64
			var id uint64
			var completed, aborted, bases, deltas int
			for step := range 60 {
				n := 1 + rng.IntN(12)
				payloads := make([][]byte, n)
				for i := range payloads {
					key := fmt.Sprintf("k%02d", rng.IntN(30))
					if rng.IntN(4) == 0 {
						payloads[i] = []byte("d " + key)
						delete(model, key)
						continue
					}
					v := fmt.Sprintf("s%d.%d", step, i)
					payloads[i] = []byte("p " + key + " " + v)
					model[key] = v
				}
				last = e.publish(inst, payloads...)
				waitPosition(t, r.rt, last)
				id++
				ack := e.checkpoint(id)
				if len(ack.Deltas) == 0 {
					bases++
				} else {
					deltas++
				}
				switch o := rng.IntN(10); {
				case o < 6:
					e.coord.Complete(id, ack)
					completed++
				case o < 9:
					e.coord.Event(id, messages.Aborted, messages.AbortTimeout)
					aborted++
				default: // the outcome is lost
				}
				if rng.IntN(8) == 0 {
					r.stop(t)
					k = newKeyed(t, cfg)
					r = e.start(inst, k)
					waitPosition(t, r.rt, last)
					if got := storeContents(t, r.rt, k); !maps.Equal(got, model) {
						t.Fatalf("step %d: after a restart the state is\n%v\nwant\n%v", step, got, model)
					}
				}
			}
			r.stop(t)
			k = newKeyed(t, cfg)
			r = e.start(inst, k)
			waitPosition(t, r.rt, last)
			if got := storeContents(t, r.rt, k); !maps.Equal(got, model) {
				t.Fatalf("after the last restart the state is\n%v\nwant\n%v", got, model)
			}
			t.Logf("%d checkpoints completed, %d aborted; %d acked a base, %d a chain", completed, aborted, bases, deltas)
			if bases < 2 || deltas < 2 {
				t.Fatalf("%d bases and %d chains acked: the test did not exercise both", bases, deltas)
			}
		})
	}
}

// TestKeyedChainFallback damages one segment of the newest chains (a delta missing or
// corrupt, or the base): the restore falls back, loudly, to the newest checkpoint whose
// chain is intact, and the replayed input brings the state back to what it was.
func TestKeyedChainFallback(t *testing.T) {
	for _, tc := range []struct {
		name string
		// damage damages a segment of the acks of checkpoints 1-3 (a base, then deltas);
		// want is the checkpoint restored.
		damage func(e *env, acks []messages.Ack)
		want   uint64
	}{
		{"newest delta corrupt", func(e *env, acks []messages.Ack) { e.overwrite(acks[2].Deltas[1]) }, 2},
		{"older delta missing", func(e *env, acks []messages.Ack) { e.remove(acks[1].Deltas[0]) }, 1},
		{"base corrupt", func(e *env, acks []messages.Ack) { e.overwrite(acks[0].Snapshot) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			const inst = "fb-0"
			k := newKeyed(t, operator.KeyedConfig{})
			r := e.start(inst, k)
			model := map[string]string{}
			var acks []messages.Ack
			var last uint64
			for id := uint64(1); id <= 3; id++ {
				var payloads [][]byte
				for i := range 5 {
					key, v := fmt.Sprintf("k%d", (int(id)+i)%6), fmt.Sprintf("v%d.%d", id, i)
					payloads = append(payloads, []byte("p "+key+" "+v))
					model[key] = v
				}
				payloads = append(payloads, []byte(fmt.Sprintf("d k%d", id)))
				delete(model, fmt.Sprintf("k%d", id))
				last = e.publish(inst, payloads...)
				waitPosition(t, r.rt, last)
				ack := e.checkpoint(id)
				if got := len(ack.Deltas); got != int(id-1) {
					t.Fatalf("checkpoint %d acked %d deltas, want %d", id, got, id-1)
				}
				e.coord.Complete(id, ack)
				acks = append(acks, ack)
			}
			r.stop(t)
			tc.damage(e, acks)
			if tc.want == 0 {
				err := e.startErr(operator.DefaultConfig(testJob, inst), newKeyed(t, operator.KeyedConfig{}))
				if !errors.Is(err, operator.ErrNoUsableSnapshot) {
					t.Fatalf("Run = %v, want ErrNoUsableSnapshot", err)
				}
				return
			}
			k = newKeyed(t, operator.KeyedConfig{})
			r = e.start(inst, k)
			if info := r.rt.Info(); info.RestoredCheckpoint != tc.want {
				t.Fatalf("restored checkpoint %d (%s), want %d", info.RestoredCheckpoint, info.RestoredFrom, tc.want)
			}
			if !e.logged(`"level":"error"`, "falling back") {
				t.Fatal("the fallback was not logged at error level")
			}
			waitPosition(t, r.rt, last)
			if got := storeContents(t, r.rt, k); !maps.Equal(got, model) {
				t.Fatalf("state %v, want %v", got, model)
			}
		})
	}
}

// overwrite replaces an object with other bytes.
func (e *env) overwrite(ref messages.SnapshotRef) {
	e.t.Helper()
	if _, err := e.coord.Snapshots().PutBytes(e.ctx(), ref.Object, []byte("not the segment")); err != nil {
		e.t.Fatal(err)
	}
}

// remove deletes an object.
func (e *env) remove(ref messages.SnapshotRef) {
	e.t.Helper()
	if err := e.coord.Snapshots().Delete(e.ctx(), ref.Object); err != nil {
		e.t.Fatal(err)
	}
}

// TestKeyedMaterializationRaces keeps records and further barriers coming while new bases
// are written from a frozen store (two checkpoints in flight at times, outcomes arriving
// late), on a state large enough that writing a base takes a while: the restart from the
// last chain gives the model's state.
func TestKeyedMaterializationRaces(t *testing.T) {
	e := newEnv(t)
	const inst = "mat-0"
	cfg := operator.KeyedConfig{MaxDeltas: 3, DeltaRatio: 0.05}
	k := newKeyed(t, cfg)
	r := e.start(inst, k)
	model := map[string]string{}
	rng := rand.New(rand.NewPCG(3, 3))
	batch := func(n int, tag string) uint64 {
		payloads := make([][]byte, n)
		for i := range payloads {
			key := fmt.Sprintf("key-%05d", rng.IntN(20000))
			if rng.IntN(10) == 0 {
				payloads[i] = []byte("d " + key)
				delete(model, key)
				continue
			}
			if rng.IntN(3) == 0 {
				v := fmt.Sprintf("%s.%d", tag, i)
				payloads[i] = []byte("p " + key + " " + v)
				model[key] = v
				continue
			}
			n, _ := strconv.Atoi(model[key])
			payloads[i] = []byte("i " + key)
			model[key] = strconv.Itoa(n + 1)
		}
		return e.publish(inst, payloads...)
	}
	last := batch(20000, "init")
	waitPosition(t, r.rt, last)
	var id uint64
	var bases int
	for round := range 12 {
		id++
		e.barrier(id)
		n := 1
		if round%3 == 2 {
			id++
			e.barrier(id)
			n = 2
		}
		last = batch(300, fmt.Sprint("r", round)) // records flow while the snapshots are written
		for range n {
			ack := e.nextAck()
			if ack.Kind != messages.AckDone && ack.Kind != messages.AckChain {
				t.Fatalf("checkpoint %d: %+v", ack.CheckpointID, ack)
			}
			if len(ack.Deltas) == 0 {
				bases++
			}
			e.coord.Complete(ack.CheckpointID, ack)
		}
	}
	if bases < 3 {
		t.Fatalf("%d bases written, want several", bases)
	}
	waitPosition(t, r.rt, last)
	r.stop(t)
	k = newKeyed(t, cfg)
	r = e.start(inst, k)
	waitPosition(t, r.rt, last)
	if got := storeContents(t, r.rt, k); !maps.Equal(got, model) {
		t.Fatalf("state after the restart differs from the model: %d keys, want %d", len(got), len(model))
	}
}

// TestKeyedChainKeepsTheBarriersLimit: a barrier's MaxDeltas (the coordinator's share of
// the manifest size per member) lowers the chain's bound; without it the configured bound
// holds.
func TestKeyedChainKeepsTheBarriersLimit(t *testing.T) {
	e := newEnv(t)
	const inst = "lim-0"
	k := newKeyed(t, operator.KeyedConfig{DeltaRatio: 1000})
	r := e.start(inst, k)
	defer r.stop(t)
	payloads := make([][]byte, 500)
	for i := range payloads {
		payloads[i] = []byte(fmt.Sprintf("p key-%03d v", i))
	}
	waitPosition(t, r.rt, e.publish(inst, payloads...))
	var chain []int
	for id := uint64(1); id <= 10; id++ {
		limit := 3
		if id > 7 {
			limit = 0 // a coordinator that sets no limit: the default bound (512)
		}
		waitPosition(t, r.rt, e.publish(inst, []byte(fmt.Sprintf("p key-%03d v%d", id, id))))
		e.coord.SendBarrier(messages.Barrier{CheckpointID: id, MaxDeltas: limit})
		ack := e.nextAck()
		if ack.Kind != messages.AckDone && ack.Kind != messages.AckChain {
			t.Fatalf("checkpoint %d: %+v", id, ack)
		}
		e.coord.Complete(id, ack)
		chain = append(chain, len(ack.Deltas))
	}
	// Checkpoint 1 is the first base; under the limit of 3 a chain holds at most 2
	// deltas (new bases at 4 and 7); without it, the chain grows past 2 from the base of 7.
	if want := []int{0, 1, 2, 0, 1, 2, 0, 1, 2, 3}; !slices.Equal(chain, want) {
		t.Fatalf("deltas per checkpoint %v, want %v", chain, want)
	}
}
