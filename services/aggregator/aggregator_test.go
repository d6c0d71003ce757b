package aggregator_test

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
	"github.com/cairn-stream/cairn/services/aggregator"
)

func TestAggregatorApply(t *testing.T) {
	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{name: "event", data: `{"key":"a","value":3}`, ok: true},
		{name: "negative value", data: `{"value":-7,"key":"a"}`, ok: true},
		{name: "white space", data: " {\"key\" : \"a\" , \"value\" : 1 }\n", ok: true},
		{name: "largest value", data: `{"key":"b","value":9223372036854775807}`, ok: true},
		{name: "float", data: `{"key":"a","value":1.5}`},
		{name: "float without fraction", data: `{"key":"a","value":2.0}`},
		{name: "exponent", data: `{"key":"a","value":1e3}`},
		{name: "value as string", data: `{"key":"a","value":"3"}`},
		{name: "value null", data: `{"key":"a","value":null}`},
		{name: "value too large", data: `{"key":"a","value":9223372036854775808}`},
		{name: "missing value", data: `{"key":"a"}`},
		{name: "missing key", data: `{"value":1}`},
		{name: "empty key", data: `{"key":"","value":1}`},
		{name: "key as number", data: `{"key":1,"value":1}`},
		{name: "unknown field", data: `{"key":"a","value":1,"extra":true}`},
		{name: "not JSON", data: `key=a value=1`},
		{name: "empty", data: ``},
		{name: "null", data: `null`},
		{name: "array", data: `[{"key":"a","value":1}]`},
		{name: "trailing data", data: `{"key":"a","value":1}{"key":"a","value":1}`},
		{name: "truncated", data: `{"key":"a","value":1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := aggregator.NewAggregator()
			err := a.Apply(op.Record{Data: []byte(tt.data), Sequence: 1})
			if tt.ok {
				if err != nil {
					t.Fatalf("Apply(%s) = %v, want nil", tt.data, err)
				}
				if a.Rejected() != 0 || len(a.Keys()) != 1 {
					t.Fatalf("after a valid event: rejected %d, keys %v", a.Rejected(), a.Keys())
				}
				return
			}
			if !errors.Is(err, aggregator.ErrMalformedEvent) {
				t.Fatalf("Apply(%s) = %v, want ErrMalformedEvent", tt.data, err)
			}
			if a.Rejected() != 1 || len(a.Keys()) != 0 {
				t.Fatalf("after a malformed event: rejected %d, keys %v", a.Rejected(), a.Keys())
			}
		})
	}
}

func TestAggregatorRejectsSumOverflow(t *testing.T) {
	a := aggregator.NewAggregator()
	for _, d := range []string{`{"key":"a","value":9223372036854775807}`, `{"key":"a","value":1}`, `{"key":"a","value":-1}`} {
		_ = a.Apply(op.Record{Data: []byte(d)})
	}
	want := map[string]messages.KeyTotals{"a": {Count: 2, Sum: 9223372036854775806}}
	if !maps.Equal(a.Keys(), want) || a.Rejected() != 1 {
		t.Fatalf("keys %v rejected %d; want %v and 1", a.Keys(), a.Rejected(), want)
	}
}

func TestAggregatorSnapshotRestore(t *testing.T) {
	a := aggregator.NewAggregator()
	for _, d := range []string{`{"key":"b","value":2}`, `{"key":"a","value":1}`, `{"key":"b","value":5}`, `bad`, `{"key":"c","value":-4}`} {
		_ = a.Apply(op.Record{Data: []byte(d)})
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot is a copy: later records do not change it.
	_ = a.Apply(op.Record{Data: []byte(`{"key":"a","value":100}`)})
	var first bytes.Buffer
	if err := snap.Persist(&first); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	b := aggregator.NewAggregator()
	if err := b.Restore(bytes.NewReader(first.Bytes())); err != nil {
		t.Fatal(err)
	}
	want := map[string]messages.KeyTotals{"a": {Count: 1, Sum: 1}, "b": {Count: 2, Sum: 7}, "c": {Count: 1, Sum: -4}}
	if !maps.Equal(b.Keys(), want) || b.Rejected() != 1 {
		t.Fatalf("restored keys %v rejected %d; want %v and 1", b.Keys(), b.Rejected(), want)
	}

	// Equal states persist to equal bytes, whatever the map order.
	for range 5 {
		s, err := b.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var again bytes.Buffer
		if err := s.Persist(&again); err != nil {
			t.Fatal(err)
		}
		s.Release()
		if !bytes.Equal(again.Bytes(), first.Bytes()) {
			t.Fatal("persisting the same state twice gave different bytes")
		}
	}

	// A failed restore leaves the state as it was.
	bad := [][]byte{nil, []byte("garbage"), first.Bytes()[:len(first.Bytes())-1], append(bytes.Clone(first.Bytes()), 0)}
	for _, data := range bad {
		if err := b.Restore(bytes.NewReader(data)); err == nil {
			t.Fatalf("Restore(%x) = nil, want an error", data)
		}
		if !maps.Equal(b.Keys(), want) || b.Rejected() != 1 {
			t.Fatalf("a failed restore changed the state to %v", b.Keys())
		}
	}
}

// TestKeyedAggregatorMatchesAggregator applies the same events, valid and malformed
// (one overflowing a sum), to both forms of the aggregator: the keyed one holds the same
// totals and rejected count in its store, and emits the same outputs.
func TestKeyedAggregatorMatchesAggregator(t *testing.T) {
	events := []string{`{"key":"b","value":2}`, `{"key":"a","value":1}`, `bad`, `{"key":"b","value":5}`,
		`{"key":"m","value":9223372036854775807}`, `{"key":"m","value":1}`, `{"key":"c","value":-4}`, `{"key":""}`}
	whole := aggregator.NewAggregator()
	whole.EmitTo("out")
	keyed := &aggregator.KeyedAggregator{}
	keyed.EmitTo("out")
	st := state.New()
	for i, d := range events {
		rec := op.Record{Data: []byte(d), Sequence: uint64(i + 1)}
		werr, kerr := whole.Apply(rec), keyed.Apply(rec, st)
		if (werr == nil) != (kerr == nil) || kerr != nil && !errors.Is(kerr, aggregator.ErrMalformedEvent) {
			t.Fatalf("event %s: Aggregator returned %v, KeyedAggregator %v", d, werr, kerr)
		}
		if w, k := whole.TakeOutputs(), keyed.TakeOutputs(); !slices.EqualFunc(w, k, func(a, b op.Output) bool { return a.Subject == b.Subject && bytes.Equal(a.Data, b.Data) }) {
			t.Fatalf("event %s: outputs %v and %v", d, w, k)
		}
	}
	keys, rejected, err := aggregator.KeyedTotals(st)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(keys, whole.Keys()) || rejected != whole.Rejected() || rejected != 3 {
		t.Fatalf("keyed totals %v rejected %d; the Aggregator has %v and %d", keys, rejected, whole.Keys(), whole.Rejected())
	}
}
