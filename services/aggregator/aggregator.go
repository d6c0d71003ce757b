package aggregator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
)

// aggregatorFormat is the version of the Aggregator's snapshot format.
const aggregatorFormat = 1

// ErrMalformedEvent is returned (wrapped) by Aggregator.Apply for an input record that is
// not a JSON event {"key":"<non-empty string>","value":<integer>}.
var ErrMalformedEvent = errors.New("malformed event")

// Aggregator is the reference operator's logic on the whole-state Machine API: a keyed
// aggregator that keeps, per key, the count and sum of the values of JSON events
// {"key":"...","value":N}, and counts the malformed events it rejected; every snapshot
// copies and writes every key. Service runs KeyedAggregator instead. It implements
// Machine; like any Machine it is used by one goroutine, so read it only through
// Runtime.Do.
type Aggregator struct {
	keys     map[string]messages.KeyTotals
	rejected uint64
	output   string
	pending  []op.Output
}

var (
	_ op.Machine  = (*Aggregator)(nil)
	_ op.Producer = (*Aggregator)(nil)
)

// EmitTo makes the Aggregator emit, for every event it applies, the key's new totals as
// JSON {"key":"...","count":N,"sum":N} on subject; "" emits nothing.
func (a *Aggregator) EmitTo(subject string) { a.output = subject }

// TakeOutputs implements Producer.
func (a *Aggregator) TakeOutputs() []op.Output {
	out := a.pending
	a.pending = nil
	return out
}

// KeyUpdate is the JSON form of an Aggregator output.
type KeyUpdate struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
	Sum   int64  `json:"sum"`
}

// NewAggregator returns an empty Aggregator.
func NewAggregator() *Aggregator {
	return &Aggregator{keys: make(map[string]messages.KeyTotals)}
}

// Apply adds one event. A record that is not a JSON object with exactly a non-empty string
// "key" and an integer "value" (in int64 range, no fraction or exponent), or that would
// overflow its key's sum, is counted as rejected and returns an error wrapping
// ErrMalformedEvent.
func (a *Aggregator) Apply(rec op.Record) error {
	key, value, err := parseEvent(rec.Data)
	if err == nil {
		t := a.keys[key]
		sum, ok := addInt64(t.Sum, value)
		if !ok {
			err = fmt.Errorf("%w: sum of key %q would overflow int64", ErrMalformedEvent, key)
		} else {
			a.keys[key] = messages.KeyTotals{Count: t.Count + 1, Sum: sum}
			if a.output != "" {
				data, _ := json.Marshal(KeyUpdate{Key: key, Count: t.Count + 1, Sum: sum})
				a.pending = append(a.pending, op.Output{Subject: a.output, Data: data})
			}
		}
	}
	if err != nil {
		a.rejected++
		return err
	}
	return nil
}

// parseEvent decodes an input event strictly.
func parseEvent(data []byte) (string, int64, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&fields); err != nil {
		return "", 0, fmt.Errorf("%w: not a JSON object: %w", ErrMalformedEvent, err)
	}
	if fields == nil {
		return "", 0, fmt.Errorf("%w: null is not an event; send {\"key\":\"...\",\"value\":N}", ErrMalformedEvent)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", 0, fmt.Errorf("%w: data after the JSON object", ErrMalformedEvent)
	}
	for name := range fields {
		if name != "key" && name != "value" {
			return "", 0, fmt.Errorf("%w: unknown field %q; allowed: key, value", ErrMalformedEvent, name)
		}
	}
	rawKey, ok := fields["key"]
	if !ok {
		return "", 0, fmt.Errorf("%w: field key is missing", ErrMalformedEvent)
	}
	rawValue, ok := fields["value"]
	if !ok {
		return "", 0, fmt.Errorf("%w: field value is missing", ErrMalformedEvent)
	}
	var key string
	if len(rawKey) == 0 || rawKey[0] != '"' || json.Unmarshal(rawKey, &key) != nil {
		return "", 0, fmt.Errorf("%w: key %s is not a string", ErrMalformedEvent, rawKey)
	}
	if key == "" {
		return "", 0, fmt.Errorf("%w: key is empty", ErrMalformedEvent)
	}
	value, err := strconv.ParseInt(string(rawValue), 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("%w: value %s is not an integer from %d to %d", ErrMalformedEvent, rawValue, int64(math.MinInt64), int64(math.MaxInt64))
	}
	return key, value, nil
}

// addInt64 returns a+b and whether it did not overflow.
func addInt64(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}

// Keys returns a copy of the per-key totals.
func (a *Aggregator) Keys() map[string]messages.KeyTotals { return maps.Clone(a.keys) }

// Rejected returns how many events were rejected.
func (a *Aggregator) Rejected() uint64 { return a.rejected }

// Snapshot copies the state.
func (a *Aggregator) Snapshot() (op.Snapshot, error) {
	return &aggregatorSnapshot{keys: maps.Clone(a.keys), rejected: a.rejected}, nil
}

// Restore replaces the state with a snapshot written by Persist; on error the state is
// unchanged.
func (a *Aggregator) Restore(r io.Reader) error {
	dec := msgpack.NewDecoder(r)
	format, err := dec.DecodeInt()
	if err != nil {
		return fmt.Errorf("aggregator snapshot: read format: %w", err)
	}
	if format != aggregatorFormat {
		return fmt.Errorf("aggregator snapshot: format %d; this build reads %d", format, aggregatorFormat)
	}
	rejected, err := dec.DecodeUint64()
	if err != nil {
		return fmt.Errorf("aggregator snapshot: read rejected: %w", err)
	}
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("aggregator snapshot: read key count: %w", err)
	}
	if n < 0 {
		return errors.New("aggregator snapshot: key list is nil")
	}
	keys := make(map[string]messages.KeyTotals, min(n, 1<<16))
	for i := range n {
		k, err := dec.DecodeString()
		if err != nil {
			return fmt.Errorf("aggregator snapshot: key %d: %w", i, err)
		}
		count, err := dec.DecodeInt64()
		if err != nil {
			return fmt.Errorf("aggregator snapshot: count of key %q: %w", k, err)
		}
		sum, err := dec.DecodeInt64()
		if err != nil {
			return fmt.Errorf("aggregator snapshot: sum of key %q: %w", k, err)
		}
		if _, dup := keys[k]; dup || k == "" {
			return fmt.Errorf("aggregator snapshot: key %q is empty or repeated", k)
		}
		keys[k] = messages.KeyTotals{Count: count, Sum: sum}
	}
	if _, err := dec.PeekCode(); !errors.Is(err, io.EOF) {
		return errors.New("aggregator snapshot: data after the last key")
	}
	a.keys, a.rejected = keys, rejected
	return nil
}

// aggregatorSnapshot is a copy of an Aggregator's state.
type aggregatorSnapshot struct {
	keys     map[string]messages.KeyTotals
	rejected uint64
}

// Persist writes the state as msgpack, keys sorted so that equal states give equal
// bytes: the format version, the rejected count, then an array of key, count, sum.
func (s *aggregatorSnapshot) Persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := msgpack.NewEncoder(bw)
	enc.UseCompactInts(true)
	if err := enc.EncodeInt(aggregatorFormat); err != nil {
		return err
	}
	if err := enc.EncodeUint(s.rejected); err != nil {
		return err
	}
	if err := enc.EncodeArrayLen(len(s.keys)); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(s.keys)) {
		t := s.keys[k]
		if err := enc.EncodeString(k); err != nil {
			return err
		}
		if err := enc.EncodeInt(t.Count); err != nil {
			return err
		}
		if err := enc.EncodeInt(t.Sum); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Release drops the copy.
func (s *aggregatorSnapshot) Release() { s.keys = nil }
