package messages_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestRoundTripEveryMessageType(t *testing.T) {
	seen := map[reflect.Type]bool{}
	for _, name := range slices.Sorted(maps.Keys(samples())) {
		m := samples()[name]
		seen[reflect.TypeOf(m)] = true
		t.Run(name, func(t *testing.T) {
			data, err := messages.Marshal(m)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := newLike(m)
			if err := messages.Unmarshal(data, got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %#v\nwant %#v", got, m)
			}
		})
	}
	want := []messages.Message{&messages.ConfigEvent{}, &messages.Barrier{}, &messages.Ack{}, &messages.CheckpointEvent{},
		&messages.Manifest{}, &messages.Registration{}, &messages.Counter{}, &messages.Lease{}, &messages.Replica{},
		&messages.InstanceRecord{}}
	for _, m := range want {
		if !seen[reflect.TypeOf(m)] {
			t.Errorf("no round-trip sample of %T", m)
		}
	}
}

func TestRoundTripKeepsInstantOfAnyTime(t *testing.T) {
	now := time.Now()
	for _, tm := range []time.Time{now, now.UTC(), now.In(time.FixedZone("X", -7*3600)), time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)} {
		in := &messages.Lease{Schema: 1, Job: "j", Holder: "h", AcquiredAt: tm}
		data, err := messages.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out messages.Lease
		if err := messages.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		if !out.AcquiredAt.Equal(tm) {
			t.Errorf("time %v came back as %v", tm, out.AcquiredAt)
		}
		if !reflect.DeepEqual(normalized(out), normalized(*in)) {
			t.Errorf("normalized lease differs: %#v vs %#v", out, *in)
		}
	}
}

func TestMarshalRejectsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    messages.Message
		want error
		msg  string
	}{
		{"job with dot", &messages.Counter{Schema: 1, Job: "a.b"}, messages.ErrInvalidName, `has '.' at byte 1`},
		{"config out of range", &messages.ConfigEvent{Schema: 1, Job: "j", Version: 1}, messages.ErrInvalidCheckpointConfig, "interval 0s is out of range; allowed: 100ms to 24h"},
		{"ack without incarnation", &messages.Ack{Schema: 1, Job: "j", Instance: "i", CheckpointID: 1, Kind: messages.AckDeclined, Reason: "r"}, nil, "incarnation is empty"},
		{"schema missing", &messages.Counter{Job: "j"}, nil, "schema version 0; set it to messages.SchemaVersion (1)"},
		{"schema too new", &messages.Counter{Schema: 2, Job: "j"}, nil, "schema version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := messages.Marshal(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Marshal error %v, want one containing %q", err, tc.msg)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Marshal error %v does not wrap %v", err, tc.want)
			}
		})
	}
}

// enc encodes v with the msgpack library, as another writer might.
func enc(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// with returns a copy of m with key set to v, or deleted when v is the deleteKey marker.
func with(m map[string]any, kv ...any) map[string]any {
	out := maps.Clone(m)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == deleteKey {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

type marker struct{}

var deleteKey = marker{}

// fixMap encodes a msgpack map whose key/value pairs are given in order as pre-encoded
// values, so that a test can repeat a key.
func fixMap(t *testing.T, pairs ...any) []byte {
	t.Helper()
	out := []byte{0x80 | byte(len(pairs)/2)}
	for _, p := range pairs {
		out = append(out, enc(t, p)...)
	}
	return out
}

// ext8 encodes a fixext8 timestamp with the given seconds and nanoseconds fields.
func ext8(sec, nsec uint64) []byte {
	b := []byte{0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(b[2:], nsec<<34|sec)
	return b
}

func TestUnmarshalIsStrict(t *testing.T) {
	counter := map[string]any{"schema": 1, "job": "j", "last": 5}
	lease := map[string]any{"schema": 1, "job": "j", "holder": "h", "acquired_at": at(1_700_000_000, 0)}
	cfg := map[string]any{
		"interval": int64(10 * time.Second), "timeout": int64(time.Minute), "min_pause": 0,
		"max_concurrent": 1, "tolerable_failures": -1, "retain": 3,
	}
	configEvent := map[string]any{"schema": 1, "job": "j", "version": 1, "config": cfg, "time": at(1, 0)}
	ack := map[string]any{
		"schema": 1, "job": "j", "id": 1, "instance": "i", "incarnation": "x", "kind": 1,
		"snapshot": map[string]any{"object": "o", "size": 1, "digest": "d"}, "positions": map[string]uint64{"s": 1},
	}
	valid := enc(t, counter)
	for _, tc := range []struct {
		name string
		into messages.Message
		data []byte
		msg  string
	}{
		{"empty payload", &messages.Counter{}, nil, "empty payload"},
		{"repeated unknown field", &messages.Counter{}, fixMap(t, "schema", 1, "job", "j", "extra", 1, "extra", 2), `field "extra" appears twice`},
		{"unknown field nested too deep", &messages.Counter{}, withRaw(t, fixMap(t, "schema", 1, "job", "j"), "extra", bytes.Repeat([]byte{0x91}, 40)), "extra (a field this build does not know): msgpack: arrays and maps nested more than 32 deep"},
		{"unknown field cut short", &messages.Counter{}, withRaw(t, fixMap(t, "schema", 1, "job", "j"), "extra", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}), "extra (a field this build does not know): msgpack: unexpected EOF"},
		{"unknown field with reserved code", &messages.Counter{}, withRaw(t, fixMap(t, "schema", 1, "job", "j"), "extra", []byte{0xc1}), "reserved code 0xc1"},
		{"negative minor", &messages.Counter{}, enc(t, with(counter, "minor", -1)), "minor: integer -1 where an integer of 0 or more is wanted"},
		{"minor as string", &messages.Counter{}, enc(t, with(counter, "minor", "2")), "minor: a string where an integer of 0 or more is wanted"},
		{"trailing bytes", &messages.Counter{}, append(bytes.Clone(valid), 0x00), "1 trailing bytes after the message"},
		{"truncated", &messages.Counter{}, valid[:len(valid)-1], "unexpected EOF"},
		{"reserved code", &messages.Counter{}, []byte{0xc1}, "reserved code 0xc1"},
		{"missing schema", &messages.Counter{}, enc(t, with(counter, "schema", deleteKey)), "schema version missing; allowed: 1-1"},
		{"schema zero", &messages.Counter{}, enc(t, with(counter, "schema", 0)), "schema version missing"},
		{"negative schema", &messages.Counter{}, enc(t, with(counter, "schema", -1)), "schema version -1; this build reads 1-1"},
		{"newer schema", &messages.Counter{}, enc(t, with(counter, "schema", 2)), "schema version 2; this build reads 1-1"},
		{"newer schema with new fields", &messages.Counter{}, enc(t, with(counter, "schema", 2, "next", "x")), "schema version 2; this build reads 1-1"},
		{"huge schema", &messages.Counter{}, enc(t, with(counter, "schema", uint64(1<<63))), "schema version 9223372036854775808"},
		{"not a map", &messages.Counter{}, enc(t, []any{1, "j", 5}), "message: an array where a map of fields is wanted"},
		{"nil message", &messages.Counter{}, []byte{0xc0}, "message: nil where a map of fields is wanted"},
		{"string for uint", &messages.Counter{}, enc(t, with(counter, "last", "5")), "last: a string where an integer from 0 to 18446744073709551615 is wanted"},
		{"negative for uint", &messages.Counter{}, enc(t, with(counter, "last", -1)), "last: integer -1 where an integer from 0"},
		{"float for int", &messages.Counter{}, enc(t, with(counter, "schema", 1.0)), "schema: float 1 where an integer"},
		{"bool for int", &messages.Counter{}, enc(t, with(counter, "last", true)), "last: true where an integer"},
		{"nil for uint", &messages.Counter{}, enc(t, with(counter, "last", nil)), "last: nil where an integer"},
		{"nil for string", &messages.Counter{}, enc(t, with(counter, "job", nil)), "job: nil where a string is wanted"},
		{"binary for string", &messages.Counter{}, enc(t, with(counter, "job", []byte("j"))), "job: binary data where a string is wanted"},
		{"number for string", &messages.Counter{}, enc(t, with(counter, "job", 7)), "job: integer 7 where a string is wanted"},
		{"int too large", &messages.Counter{}, enc(t, with(counter, "schema", uint64(1<<63))), "schema version 9223372036854775808"},
		{"int too large in nested", &messages.ConfigEvent{}, enc(t, with(configEvent, "config", with(cfg, "retain", uint64(1<<63)))), "config.retain: integer 9223372036854775808 where an integer from -9223372036854775808 to 9223372036854775807"},
		{"repeated field", &messages.Counter{}, fixMap(t, "schema", 1, "job", "j", "job", "k"), `field "job" appears twice`},
		{"map for struct field", &messages.ConfigEvent{}, enc(t, with(configEvent, "config", 5)), "config: integer 5 where a map of fields is wanted"},
		{"nil for struct field", &messages.ConfigEvent{}, enc(t, with(configEvent, "config", nil)), "config: nil where a map of fields is wanted"},
		{"non-string field name", &messages.Counter{}, append([]byte{0x81, 0x01}, 0x01), "message key: integer 1 where a field name string is wanted"},
		{"nil for time (panicked in the msgpack library)", &messages.Barrier{}, []byte("\x86\xactriggered_at\xc0"), "triggered_at: nil where a timestamp (extension -1) is wanted"},
		{"nil for time in array form", &messages.Lease{}, []byte("\x940\xc0\xa6000000\xc0"), "message: an array where a map of fields is wanted"},
		{"time as string", &messages.Lease{}, enc(t, with(lease, "acquired_at", "2024-01-01T00:00:00Z")), "acquired_at: a string where a timestamp (extension -1) is wanted"},
		{"time as legacy array", &messages.Lease{}, enc(t, with(lease, "acquired_at", []int64{1, 2})), "acquired_at: an array where a timestamp"},
		{"time nanoseconds too large", &messages.Lease{}, lease8(t, ext8(5, 1_000_000_000)), "acquired_at: timestamp with 1000000000 nanoseconds; allowed: 0-999999999"},
		{"time 96-bit nanoseconds too large", &messages.Lease{}, lease8(t, []byte{0xc7, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}), "acquired_at: timestamp with 4294967295 nanoseconds"},
		{"time of odd length", &messages.Lease{}, lease8(t, []byte{0xd5, 0xff, 0, 0}), "acquired_at: timestamp of 2 bytes"},
		{"time extension type", &messages.Lease{}, lease8(t, []byte{0xd6, 0x05, 0, 0, 0, 0}), "acquired_at: extension type 5 where a timestamp"},
		{"non-string map key", &messages.Ack{}, enc(t, with(ack, "positions", map[int]uint64{1: 2})), "positions key: integer 1 where a string is wanted"},
		{"repeated map key", &messages.Ack{}, enc(t, with(ack, "positions", rawMsgpack(append([]byte{0x82}, append(enc(t, "s"), append([]byte{1}, append(enc(t, "s"), 2)...)...)...)))), `positions: key "s" appears twice`},
		{"negative position", &messages.Ack{}, enc(t, with(ack, "positions", map[string]int{"s": -3})), `positions["s"]: integer -3 where an integer from 0`},
		{"array too long for its data", &messages.CheckpointEvent{}, withRaw(t, fixMap(t, "schema", 1, "job", "j", "id", 1, "outcome", 1), "participants", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}), "participants[0]: msgpack: unexpected EOF"},
		{"map too long for its data", &messages.Manifest{}, []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, "unexpected EOF"},
		{"string too long for its data", &messages.Counter{}, []byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff}, "unexpected EOF"},
		{"invalid job name", &messages.Counter{}, enc(t, with(counter, "job", "a.b")), `job name "a.b" has '.' at byte 1`},
		{"invalid non-ASCII job name", &messages.Counter{}, enc(t, with(counter, "job", "jé")), `job name "jé" has 'é' at byte 1`},
		{"version zero", &messages.ConfigEvent{}, enc(t, with(configEvent, "version", 0)), "version 0 is reserved for the defaults"},
		{"config out of range", &messages.ConfigEvent{}, enc(t, with(configEvent, "config", with(cfg, "interval", int64(time.Millisecond)))), "interval 1ms is out of range; allowed: 100ms to 24h"},
		{"unknown ack kind", &messages.Ack{}, enc(t, with(ack, "kind", 4)), "kind 4; allowed: 1 (ack), 2 (decline) or 3 (chain)"},
		{"deltas in a plain ack", &messages.Ack{}, enc(t, with(ack, "deltas", []any{map[string]any{"object": "o", "size": 1, "digest": "d"}})), "deltas need kind 3 (chain)"},
		{"snapshot store not a bucket name", &messages.Ack{}, enc(t, with(ack, "snapshot", map[string]any{"store": "A.B", "object": "o", "size": 1, "digest": "d"})), `store "A.B" is not an object store name`},
		{"manifest snapshot store", &messages.Manifest{}, enc(t, map[string]any{"schema": 1, "job": "j", "id": 1, "instances": map[string]any{"i": map[string]any{"incarnation": "x", "snapshot": map[string]any{"store": "*", "object": "o", "size": 1, "digest": "d"}}}}), `store "*" is not an object store name`},
		{"barrier id zero", &messages.Barrier{}, enc(t, map[string]any{"schema": 1, "job": "j", "id": 0}), "checkpoint id 0"},
		{"barrier negative max deltas", &messages.Barrier{}, enc(t, map[string]any{"schema": 1, "job": "j", "id": 3, "max_deltas": -1}), "max deltas -1"},
		{"aborted without reason", &messages.CheckpointEvent{}, enc(t, map[string]any{"schema": 1, "job": "j", "id": 1, "outcome": 2}), "abort reason 0; allowed: 1-7"},
		{"manifest instance name", &messages.Manifest{}, enc(t, map[string]any{"schema": 1, "job": "j", "id": 1, "instances": map[string]any{"a b": map[string]any{}}}), `instance name "a b"`},
		{"registration without incarnation", &messages.Registration{}, enc(t, map[string]any{"schema": 1, "job": "j", "instance": "i"}), "incarnation is empty"},
		{"instance record without incarnation", &messages.InstanceRecord{}, enc(t, map[string]any{"schema": 1, "job": "j", "instance": "i", "claims": 1}), "incarnation is empty"},
		{"instance record with a bad instance", &messages.InstanceRecord{}, enc(t, map[string]any{"schema": 1, "job": "j", "instance": "a.b", "incarnation": "x"}), "instance"},
		{"lease without holder", &messages.Lease{}, enc(t, map[string]any{"schema": 1, "job": "j"}), "holder is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := messages.Unmarshal(tc.data, tc.into)
			if !errors.Is(err, messages.ErrMalformed) {
				t.Fatalf("Unmarshal(% x) = %v, want ErrMalformed", tc.data, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Unmarshal error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

// withRaw appends the key with a raw msgpack value to a fixmap made by fixMap.
func withRaw(t *testing.T, fixmap []byte, key string, raw []byte) []byte {
	t.Helper()
	b := bytes.Clone(fixmap)
	b[0]++
	b = append(b, enc(t, key)...)
	return append(b, raw...)
}

// lease8 encodes a valid lease whose acquired_at is the given raw msgpack value.
func lease8(t *testing.T, rawTime []byte) []byte {
	t.Helper()
	return withRaw(t, fixMap(t, "schema", 1, "job", "j", "holder", "h"), "acquired_at", rawTime)
}

// rawMsgpack is a pre-encoded msgpack value that encodes as itself.
type rawMsgpack []byte

func (r rawMsgpack) EncodeMsgpack(e *msgpack.Encoder) error {
	_, err := e.Writer().Write(r)
	return err
}

func TestUnmarshalRejectsBadTarget(t *testing.T) {
	valid, err := messages.Marshal(&messages.Counter{Schema: 1, Job: "j"})
	if err != nil {
		t.Fatal(err)
	}
	var nilCounter *messages.Counter
	if err := messages.Unmarshal(valid, nilCounter); err == nil {
		t.Fatal("Unmarshal into a nil pointer succeeded")
	}
}

func TestMarshalOutputPassesStrictDecoding(t *testing.T) {
	// Nil and empty maps and slices and zero times must all survive the strict check,
	// since other services write them.
	for _, m := range []messages.Message{
		&messages.Ack{Schema: 1, Job: "j", CheckpointID: 1, Instance: "i", Incarnation: "x", Kind: messages.AckDeclined, Reason: "r"},
		&messages.CheckpointEvent{Schema: 1, Job: "j", CheckpointID: 1, Outcome: messages.Completed},
		&messages.Manifest{Schema: 1, Job: "j", CheckpointID: 1, Instances: map[string]messages.InstanceSnapshot{}},
	} {
		data, err := messages.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := newLike(m)
		if err := messages.Unmarshal(data, got); err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%T changed: %#v", m, got)
		}
	}
}

func TestUnmarshalIntoReusedValueKeepsNothingOld(t *testing.T) {
	first, err := messages.Marshal(&messages.Ack{Schema: 1, Job: "j", CheckpointID: 1, Instance: "i", Incarnation: "x",
		Kind: messages.AckDeclined, Reason: "full", Positions: map[string]uint64{"a": 1}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := messages.Marshal(&messages.Ack{Schema: 1, Job: "j", CheckpointID: 2, Instance: "i", Incarnation: "x",
		Kind: messages.AckDone, Snapshot: messages.SnapshotRef{Object: "o", Digest: "d"}, Positions: map[string]uint64{"b": 2}})
	if err != nil {
		t.Fatal(err)
	}
	var a messages.Ack
	if err := messages.Unmarshal(first, &a); err != nil {
		t.Fatal(err)
	}
	if err := messages.Unmarshal(second, &a); err != nil {
		t.Fatal(err)
	}
	if a.Reason != "" || !reflect.DeepEqual(a.Positions, map[string]uint64{"b": 2}) {
		t.Fatalf("second decode kept parts of the first: %+v", a)
	}
}

// BenchmarkUnmarshalManifest decodes a manifest of 16 instances, each with a chain of 8
// deltas: the largest message a coordinator and an operator read at every start.
func BenchmarkUnmarshalManifest(b *testing.B) {
	m := &messages.Manifest{Schema: messages.SchemaVersion, Job: "bench", CheckpointID: 9, ConfigVersion: 1,
		CompletedAt: time.Now(), Instances: map[string]messages.InstanceSnapshot{}}
	for i := range 16 {
		inst := fmt.Sprintf("counter-%d", i)
		st := messages.InstanceSnapshot{Incarnation: "i", Positions: map[string]uint64{"CAIRN_INPUT": uint64(1000 + i)},
			Snapshot: messages.SnapshotRef{Object: "bench/1/" + inst + "/base", Size: 1 << 20, Digest: "SHA-256=" + strings.Repeat("a", 43) + "="}}
		for d := range 8 {
			st.Deltas = append(st.Deltas, messages.SnapshotRef{Object: fmt.Sprintf("bench/%d/%s/delta", d+2, inst), Size: 4096, Digest: "SHA-256=" + strings.Repeat("b", 43) + "="})
		}
		m.Instances[inst] = st
	}
	data, err := messages.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var out messages.Manifest
		if err := messages.Unmarshal(data, &out); err != nil {
			b.Fatal(err)
		}
	}
}
