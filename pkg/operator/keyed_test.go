package operator_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// kvMachine applies records "p <key> <value>" (put) and "d <key>" (delete).
type kvMachine struct{}

func (kvMachine) Apply(rec operator.Record, st *state.Store) error {
	f := strings.Fields(string(rec.Data))
	switch {
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
func newKeyed(t *testing.T, cfg operator.KeyedConfig) *operator.Keyed {
	t.Helper()
	k, err := operator.NewKeyed(kvMachine{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// storeContents reads a Keyed's store on the processing goroutine.
func storeContents(t *testing.T, rt *operator.Runtime, k *operator.Keyed) map[string]string {
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
