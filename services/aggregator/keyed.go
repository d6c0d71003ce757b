package aggregator

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// Keys of the KeyedAggregator's state: the totals of event key K under "k/K", the
// rejected count under "rejected".
const (
	totalsPrefix = "k/"
	rejectedKey  = "rejected"
)

// KeyedAggregator is the reference operator on the keyed state store: the Aggregator's
// logic with its state (per-key totals, rejected count) in the state.Store that
// operator.Keyed owns and checkpoints incrementally. Service runs it.
type KeyedAggregator struct {
	output  string
	pending []op.Output
	// st is the store the views below read; they are made again for another store.
	st       *state.Store
	totals   *state.Map[messages.KeyTotals]
	rejected *state.Map[uint64]
}

// views returns the views of st.
func (a *KeyedAggregator) views(st *state.Store) (*state.Map[messages.KeyTotals], *state.Map[uint64]) {
	if a.st != st {
		a.st, a.totals, a.rejected = st, totalsView(st), state.NewMap(st, rejectedKey, state.Uint64)
	}
	return a.totals, a.rejected
}

func totalsView(st *state.Store) *state.Map[messages.KeyTotals] {
	return state.NewMap(st, totalsPrefix, state.Codec[messages.KeyTotals](totalsCodec{}))
}

var (
	_ op.KeyedMachine = (*KeyedAggregator)(nil)
	_ op.Producer     = (*KeyedAggregator)(nil)
)

// EmitTo makes the KeyedAggregator emit, for every event it applies, the key's new
// totals as JSON {"key":"...","count":N,"sum":N} on subject; "" emits nothing.
func (a *KeyedAggregator) EmitTo(subject string) { a.output = subject }

// TakeOutputs implements Producer.
func (a *KeyedAggregator) TakeOutputs() []op.Output {
	out := a.pending
	a.pending = nil
	return out
}

// totalsCodec encodes KeyTotals as 16 bytes: count and sum, big-endian.
type totalsCodec struct{}

func (totalsCodec) Encode(t messages.KeyTotals) ([]byte, error) {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(t.Count))
	return binary.BigEndian.AppendUint64(b, uint64(t.Sum)), nil
}

func (totalsCodec) Decode(data []byte) (messages.KeyTotals, error) {
	if len(data) != 16 {
		return messages.KeyTotals{}, fmt.Errorf("totals of %d bytes; want 16", len(data))
	}
	return messages.KeyTotals{Count: int64(binary.BigEndian.Uint64(data)), Sum: int64(binary.BigEndian.Uint64(data[8:]))}, nil
}

// Apply adds one event to st, with the Aggregator's rules: a malformed event, or one
// that would overflow its key's sum, is counted as rejected and returns an error
// wrapping ErrMalformedEvent.
func (a *KeyedAggregator) Apply(rec op.Record, st *state.Store) error {
	totals, rejected := a.views(st)
	key, value, err := parseEvent(rec.Data)
	if err == nil {
		var t messages.KeyTotals
		t, _, err = totals.Get(key)
		if err == nil {
			sum, ok := addInt64(t.Sum, value)
			if !ok {
				err = fmt.Errorf("%w: sum of key %q would overflow int64", ErrMalformedEvent, key)
			} else {
				t = messages.KeyTotals{Count: t.Count + 1, Sum: sum}
				err = totals.Put(key, t)
				if err == nil && a.output != "" {
					data, _ := json.Marshal(KeyUpdate{Key: key, Count: t.Count, Sum: t.Sum})
					a.pending = append(a.pending, op.Output{Subject: a.output, Data: data})
				}
			}
		}
	}
	if err != nil {
		n, _, _ := rejected.Get("")
		if perr := rejected.Put("", n+1); perr != nil {
			return perr
		}
		return err
	}
	return nil
}

// KeyedTotals reads a KeyedAggregator's state from st: the per-key totals and the
// rejected count.
func KeyedTotals(st *state.Store) (map[string]messages.KeyTotals, uint64, error) {
	keys := map[string]messages.KeyTotals{}
	err := totalsView(st).Range(func(k string, t messages.KeyTotals) bool {
		keys[k] = t
		return true
	})
	if err != nil {
		return nil, 0, err
	}
	rejected, _, err := state.NewMap(st, rejectedKey, state.Uint64).Get("")
	return keys, rejected, err
}
