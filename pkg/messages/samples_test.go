package messages_test

import (
	"reflect"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// at returns a time as the msgpack decoder produces it (time.Unix: local, no monotonic
// reading), so that decoded values compare with reflect.DeepEqual.
func at(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }

// samples returns valid values of every Message type, with empty, nil and full optional
// parts, named for test output.
func samples() map[string]messages.Message {
	cfg := messages.DefaultConfig()
	full := messages.CheckpointConfig{
		Interval:          750 * time.Millisecond,
		Timeout:           24 * time.Hour,
		MinPause:          1500 * time.Millisecond,
		MaxConcurrent:     16,
		TolerableFailures: 1000,
		Retain:            100,
	}
	ref := messages.SnapshotRef{Object: "j/7/counter-0", Size: 1 << 40, Digest: "SHA-256=abc"}
	return map[string]messages.Message{
		"config event defaults": &messages.ConfigEvent{Schema: 1, Job: "demo", Version: 1, Config: cfg, Time: at(1_700_000_000, 123_456_789)},
		"config event full":     &messages.ConfigEvent{Schema: 1, Job: "a_B-9", Version: 1<<63 + 5, Config: full, Time: at(0, 1)},
		"config event zero time": &messages.ConfigEvent{
			Schema: 1, Job: "j", Version: 2, Config: cfg,
		},
		"barrier":             &messages.Barrier{Schema: 1, Job: "demo", CheckpointID: 7, ConfigVersion: 3, TriggeredAt: at(1_700_000_001, 0), Coordinator: "coord-1"},
		"barrier with limits": &messages.Barrier{Schema: 1, Job: "demo", CheckpointID: 8, TriggeredAt: at(1_700_000_002, 0), Coordinator: "coord-1", Token: 12, MaxDeltas: 4096},
		"barrier before 1970": &messages.Barrier{Schema: 1, Job: "demo", CheckpointID: 1, TriggeredAt: at(-5_000_000_000, 999_999_999)},
		"ack done": &messages.Ack{
			Schema: 1, Job: "demo", CheckpointID: 7, Instance: "counter-0", Incarnation: "inc-1",
			Kind: messages.AckDone, Snapshot: ref, Positions: map[string]uint64{"CAIRN_INPUT": 42, "other": 0},
			Filters: map[string][]string{"CAIRN_INPUT": {"cairn.input.demo.counter-0"}, "other": {}},
		},
		"ack done empty positions": &messages.Ack{
			Schema: 1, Job: "demo", CheckpointID: 7, Instance: "counter-0", Incarnation: "inc-1",
			Kind: messages.AckDone, Snapshot: ref, Positions: map[string]uint64{},
		},
		"ack declined": &messages.Ack{
			Schema: 1, Job: "demo", CheckpointID: 8, Instance: "counter-1", Incarnation: "inc-2",
			Kind: messages.AckDeclined, Reason: "disk full",
		},
		"checkpoint completed": &messages.CheckpointEvent{
			Schema: 1, Job: "demo", CheckpointID: 7, ConfigVersion: 3, Outcome: messages.Completed,
			TriggeredAt: at(1_700_000_000, 5), FinishedAt: at(1_700_000_002, 6),
			Participants: []string{"counter-0", "counter-1"}, Bytes: 4096,
		},
		"checkpoint aborted": &messages.CheckpointEvent{
			Schema: 1, Job: "demo", CheckpointID: 9, Outcome: messages.Aborted,
			Reason: messages.AbortCoordinatorChange, Detail: "lease lost", Failed: true,
			Participants: []string{},
		},
		"manifest": &messages.Manifest{
			Schema: 1, Job: "demo", CheckpointID: 7, ConfigVersion: 3,
			TriggeredAt: at(1_700_000_000, 0), CompletedAt: at(1_700_000_001, 0),
			Instances: map[string]messages.InstanceSnapshot{
				"counter-0": {Incarnation: "inc-1", Snapshot: ref, Positions: map[string]uint64{"CAIRN_INPUT": 42}},
				"counter-1": {Incarnation: "inc-2", Snapshot: ref},
			},
		},
		"manifest carried forward": &messages.Manifest{
			Schema: 1, Job: "demo", CheckpointID: 9,
			Instances: map[string]messages.InstanceSnapshot{
				"counter-0": {
					Incarnation: "inc-1", Snapshot: ref, Positions: map[string]uint64{"CAIRN_INPUT": 42},
					Filters: map[string][]string{"CAIRN_INPUT": {"cairn.input.demo.counter-0", "x.>"}}, Checkpoint: 7, AbsentSince: at(1_700_000_003, 0),
				},
			},
		},
		"member removed": &messages.MemberEvent{
			Schema: 1, Job: "demo", Instance: "counter-2", Kind: messages.MemberRemoved, At: at(1_700_000_000, 0),
			Incarnation: "inc-1", Checkpoint: 12, By: "coord-1", Detail: "state of checkpoint 7 dropped",
		},
		"member reset": &messages.MemberEvent{Schema: 1, Job: "demo", Instance: "counter-2", Kind: messages.MemberResetState},
		"member reemitted": &messages.MemberEvent{
			Schema: 1, Job: "demo", Instance: "counter-0", Kind: messages.MemberOutputsReemitted, At: at(1_700_000_000, 0),
			Incarnation: "inc-3", Checkpoint: 4, Detail: "outputs replayed after sequence 42 published again",
		},
		"alarm raised": &messages.AlarmEvent{
			Schema: 1, Job: "demo", Kind: messages.AlarmAbortsRepeated, State: messages.AlarmRaised, At: at(1_700_000_005, 0),
			Since: at(1_700_000_000, 0), Reason: messages.AbortStorageFull, Count: 5, Checkpoint: 12,
			Detail: "counter-0 declined: snapshot store full", Coordinator: "coord-1",
		},
		"alarm cleared":         &messages.AlarmEvent{Schema: 1, Job: "demo", Kind: messages.AlarmAbortsRepeated, State: messages.AlarmCleared},
		"manifest no instances": &messages.Manifest{Schema: 1, Job: "demo", CheckpointID: 1},
		"manifest savepoint": &messages.Manifest{
			Schema: 1, Job: "demo", CheckpointID: 4, Savepoint: "before-upgrade", Token: 3,
			Instances: map[string]messages.InstanceSnapshot{"counter-0": {Incarnation: "inc-1", Snapshot: ref, Positions: map[string]uint64{"CAIRN_INPUT": 42}}},
		},
		"registration": &messages.Registration{Schema: 1, Job: "demo", Instance: "counter-0", Incarnation: "inc-1", StartedAt: at(1_700_000_000, 0)},
		"instance record": &messages.InstanceRecord{Schema: 1, Job: "demo", Instance: "counter-0", Incarnation: "inc-2", Claims: 2,
			ClaimedAt: at(1_700_000_000, 0), StoppedAt: at(1_700_000_100, 0), Member: 7},
		"instance record new": &messages.InstanceRecord{Schema: 1, Job: "demo", Instance: "counter-0", Incarnation: "inc-1", Claims: 1, ClaimedAt: at(1_700_000_000, 0)},
		"counter":             &messages.Counter{Schema: 1, Job: "demo", Last: 12},
		"counter zero":        &messages.Counter{Schema: 1, Job: "demo"},
		"lease":               &messages.Lease{Schema: 1, Job: "demo", Holder: "coord-1", AcquiredAt: at(1_700_000_000, 0)},
		"replica":             &messages.Replica{Schema: 1, ID: "coord-1", StartedAt: at(1_700_000_000, 0)},
		"replica restricted":  &messages.Replica{Schema: 1, ID: "coord-2", Jobs: []string{"a", "b"}, StartedAt: at(1_700_000_000, 0)},
	}
}

// newLike returns a new zero value of m's type.
func newLike(m messages.Message) messages.Message {
	return reflect.New(reflect.TypeOf(m).Elem()).Interface().(messages.Message)
}

// normalized returns a copy of the message value v (a struct, not a pointer) with every
// time.Time in UTC and without a monotonic reading, so that equal instants compare equal
// with reflect.DeepEqual.
func normalized(v any) any {
	rv := reflect.ValueOf(v)
	out := reflect.New(rv.Type()).Elem()
	out.Set(rv)
	normalize(out)
	return out.Interface()
}

var timeType = reflect.TypeFor[time.Time]()

func normalize(v reflect.Value) {
	if v.Type() == timeType {
		v.Set(reflect.ValueOf(v.Interface().(time.Time).Round(0).UTC()))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalize(v.Field(i))
			}
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			normalize(e)
			m.SetMapIndex(it.Key(), e)
		}
		v.Set(m)
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(s, v)
		for i := range s.Len() {
			normalize(s.Index(i))
		}
		v.Set(s)
	}
}
