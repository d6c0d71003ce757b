package messages_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cairn-stream/cairn/pkg/messages"
)

var updateFixtures = flag.Bool("update-fixtures", false, "rewrite testdata/next from the records in TestNextVersionFixtures")

// future is what a newer minor version adds to every record: its minor version and a
// field of a shape this build has never seen (nested containers, a float, an extension).
func future(m map[string]any) map[string]any {
	return with(m, messages.MinorKey, 3, "lineage", map[string]any{
		"parents": []any{uint64(1), "two", nil, map[string]any{"deep": []any{3.5, true}}},
		"codec":   &msgpack.RawMessage{0xd4, 0x05, 0x2a}, // fixext1 of extension type 5
	})
}

// nextFixture is a record as a newer build writes it, and what this build must read from it.
type nextFixture struct {
	file   string
	record map[string]any
	into   messages.Message
	want   messages.Message // nil: the record must be refused with an error containing refuse
	refuse string
}

func nextFixtures() []nextFixture {
	cfg := map[string]any{
		"interval": int64(2 * time.Second), "timeout": int64(time.Minute), "min_pause": 0,
		"max_concurrent": 2, "tolerable_failures": -1, "retain": 3, "jitter": "250ms",
	}
	wantCfg := messages.CheckpointConfig{Interval: 2 * time.Second, Timeout: time.Minute, MaxConcurrent: 2, TolerableFailures: -1, Retain: 3}
	ref := map[string]any{"store": "CAIRN_SNAPSHOTS_j", "object": "j/7/i-0", "size": 10, "digest": "SHA-256=abc", "compression": "zstd"}
	wantRef := messages.SnapshotRef{Store: "CAIRN_SNAPSHOTS_j", Object: "j/7/i-0", Size: 10, Digest: "SHA-256=abc"}
	ack := map[string]any{
		"schema": 1, "job": "j", "id": 7, "instance": "i-0", "incarnation": "inc", "kind": 1,
		"snapshot": ref, "positions": map[string]uint64{"CAIRN_INPUT": 42}, "watermark": at(1_700_000_000, 0),
	}
	return []nextFixture{
		{
			file:   "config_event",
			record: future(map[string]any{"schema": 1, "job": "j", "version": 4, "config": cfg, "time": at(1_700_000_000, 0), "author": "ops"}),
			into:   &messages.ConfigEvent{},
			want:   &messages.ConfigEvent{Schema: 1, Job: "j", Version: 4, Config: wantCfg, Time: at(1_700_000_000, 0)},
		},
		{
			file: "barrier",
			record: future(map[string]any{
				"schema": 1, "job": "j", "id": 7, "config_version": 4, "triggered_at": at(1_700_000_000, 0),
				"coordinator": "c-1", "fencing_token": uint64(12), "savepoint": "before-upgrade",
			}),
			into: &messages.Barrier{},
			want: &messages.Barrier{Schema: 1, Job: "j", CheckpointID: 7, ConfigVersion: 4, TriggeredAt: at(1_700_000_000, 0), Coordinator: "c-1"},
		},
		{
			file:   "ack",
			record: future(ack),
			into:   &messages.Ack{},
			want: &messages.Ack{
				Schema: 1, Job: "j", CheckpointID: 7, Instance: "i-0", Incarnation: "inc", Kind: messages.AckDone,
				Snapshot: wantRef, Positions: map[string]uint64{"CAIRN_INPUT": 42},
			},
		},
		{
			// An ack kind this build does not know is not safe to act on: whether the
			// snapshot is stored cannot be told. The ack is refused (and dropped).
			file:   "ack_unknown_kind",
			record: future(with(ack, "kind", 4)),
			into:   &messages.Ack{},
			refuse: "ack: kind 4; allowed: 1 (ack), 2 (decline) or 3 (chain)",
		},
		{
			file: "checkpoint_event_unknown_reason",
			record: future(map[string]any{
				"schema": 1, "job": "j", "id": 9, "config_version": 4, "outcome": 2, "reason": 9, "detail": "storage full",
				"triggered_at": at(1_700_000_000, 0), "finished_at": at(1_700_000_001, 0), "participants": []string{"i-0"}, "freed": 4096,
			}),
			into: &messages.CheckpointEvent{},
			want: &messages.CheckpointEvent{
				Schema: 1, Job: "j", CheckpointID: 9, ConfigVersion: 4, Outcome: messages.Aborted, Reason: 9, Detail: "storage full",
				TriggeredAt: at(1_700_000_000, 0), FinishedAt: at(1_700_000_001, 0), Participants: []string{"i-0"},
			},
		},
		{
			file: "checkpoint_event_unknown_outcome",
			record: future(map[string]any{
				"schema": 1, "job": "j", "id": 10, "config_version": 4, "outcome": 3,
				"triggered_at": at(1_700_000_000, 0), "finished_at": at(1_700_000_001, 0), "participants": []string{},
			}),
			into: &messages.CheckpointEvent{},
			want: &messages.CheckpointEvent{
				Schema: 1, Job: "j", CheckpointID: 10, ConfigVersion: 4, Outcome: 3,
				TriggeredAt: at(1_700_000_000, 0), FinishedAt: at(1_700_000_001, 0), Participants: []string{},
			},
		},
		{
			file: "manifest",
			record: future(map[string]any{
				"schema": 1, "job": "j", "id": 7, "config_version": 4, "triggered_at": at(1_700_000_000, 0), "completed_at": at(1_700_000_001, 0),
				"fencing_token": uint64(12),
				"instances": map[string]any{"i-0": map[string]any{
					"incarnation": "inc", "snapshot": ref, "positions": map[string]uint64{"CAIRN_INPUT": 42}, "checkpoint": 7,
					"delta_chain": []any{"j/5/i-0", "j/6/i-0"},
				}},
			}),
			into: &messages.Manifest{},
			want: &messages.Manifest{
				Schema: 1, Job: "j", CheckpointID: 7, ConfigVersion: 4, TriggeredAt: at(1_700_000_000, 0), CompletedAt: at(1_700_000_001, 0),
				Instances: map[string]messages.InstanceSnapshot{"i-0": {
					Incarnation: "inc", Snapshot: wantRef, Positions: map[string]uint64{"CAIRN_INPUT": 42}, Checkpoint: 7,
				}},
			},
		},
		{
			file:   "registration",
			record: future(map[string]any{"schema": 1, "job": "j", "instance": "i-0", "incarnation": "inc", "started_at": at(1_700_000_000, 0), "version": "2.0.0"}),
			into:   &messages.Registration{},
			want:   &messages.Registration{Schema: 1, Job: "j", Instance: "i-0", Incarnation: "inc", StartedAt: at(1_700_000_000, 0)},
		},
		{
			file:   "counter",
			record: future(map[string]any{"schema": 1, "job": "j", "last": 7, "updated_at": at(1_700_000_000, 0)}),
			into:   &messages.Counter{},
			want:   &messages.Counter{Schema: 1, Job: "j", Last: 7},
		},
		{
			file:   "lease",
			record: future(map[string]any{"schema": 1, "job": "j", "holder": "c-1", "acquired_at": at(1_700_000_000, 0), "replicas": []string{"c-1", "c-2"}}),
			into:   &messages.Lease{},
			want:   &messages.Lease{Schema: 1, Job: "j", Holder: "c-1", AcquiredAt: at(1_700_000_000, 0)},
		},
		{
			file:   "member_event_unknown_kind",
			record: future(map[string]any{"schema": 1, "job": "j", "instance": "i-0", "kind": 8, "at": at(1_700_000_000, 0), "detail": "rescaled", "to": 4}),
			into:   &messages.MemberEvent{},
			want:   &messages.MemberEvent{Schema: 1, Job: "j", Instance: "i-0", Kind: 8, At: at(1_700_000_000, 0), Detail: "rescaled"},
		},
		{
			file: "alarm_event_unknown_kind",
			record: future(map[string]any{"schema": 1, "job": "j", "kind": "lease_flapping", "state": 3, "at": at(1_700_000_001, 0),
				"since": at(1_700_000_000, 0), "reason": 9, "count": 5, "checkpoint": 12, "detail": "d", "coordinator": "c-1", "severity": "page"}),
			into: &messages.AlarmEvent{},
			want: &messages.AlarmEvent{Schema: 1, Job: "j", Kind: "lease_flapping", State: 3, At: at(1_700_000_001, 0),
				Since: at(1_700_000_000, 0), Reason: 9, Count: 5, Checkpoint: 12, Detail: "d", Coordinator: "c-1"},
		},
	}
}

// TestNextVersionFixtures decodes, with this build's reader, records as a newer minor
// version writes them (testdata/next: extra fields at every level, a newer minor
// version, enum values this build does not know). The files are committed so that they
// stay what an older reader must accept; -update-fixtures rewrites them.
func TestNextVersionFixtures(t *testing.T) {
	for _, fx := range nextFixtures() {
		t.Run(fx.file, func(t *testing.T) {
			path := filepath.Join("testdata", "next", fx.file+".msgpack")
			if *updateFixtures {
				if err := os.WriteFile(path, encSorted(t, fx.record), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read fixture: %v (rewrite with -update-fixtures)", err)
			}
			if !bytes.Contains(data, []byte("\xa5minor\x03")) {
				t.Fatalf("fixture %s does not carry a newer minor version", path)
			}
			err = messages.Unmarshal(data, fx.into)
			if fx.want == nil {
				if !errors.Is(err, messages.ErrMalformed) || !strings.Contains(err.Error(), fx.refuse) {
					t.Fatalf("Unmarshal = %v, want ErrMalformed containing %q", err, fx.refuse)
				}
				return
			}
			if err != nil {
				t.Fatalf("this build cannot read the next version's record: %v", err)
			}
			if !reflect.DeepEqual(fx.into, fx.want) {
				t.Fatalf("decoded\n %#v\nwant\n %#v", fx.into, fx.want)
			}
			// What this build writes back is readable by this build (and by the
			// previous one: no minor key, no field it does not know).
			out, err := messages.Marshal(fx.into)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if bytes.Contains(out, []byte(messages.MinorKey)) {
				t.Fatalf("this build (minor %d) wrote a minor key", messages.SchemaMinor)
			}
		})
	}
}

// encSorted encodes v with map keys sorted, so that a rewritten fixture changes only
// where its record did.
func encSorted(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	e.SetSortMapKeys(true)
	if err := e.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnknownEnumValuesAreShownAsNumbers(t *testing.T) {
	if got := messages.AbortReason(9).String(); got != "AbortReason(9)" {
		t.Errorf("unknown abort reason shows as %q", got)
	}
	if messages.AbortReason(9).Counted() {
		t.Error("an unknown abort reason counts toward tolerable_failures")
	}
	if got := messages.MemberEventKind(8).String(); got != "MemberEventKind(8)" {
		t.Errorf("unknown member event kind shows as %q", got)
	}
	if got := messages.AlarmState(3).String(); got != "AlarmState(3)" {
		t.Errorf("unknown alarm state shows as %q", got)
	}
}

func TestUnknownFieldNestedAtTheLimitIsSkipped(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x91}, 32), 0x01)
	data := withRaw(t, fixMap(t, "schema", 1, "job", "j", "last", 3), "extra", deep)
	var c messages.Counter
	if err := messages.Unmarshal(data, &c); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if c.Last != 3 {
		t.Fatalf("decoded %+v", c)
	}
}

func TestNewerMajorVersionIsRefused(t *testing.T) {
	data := enc(t, map[string]any{"schema": 2, "job": "j", "last": 3, "minor": 0})
	var c messages.Counter
	err := messages.Unmarshal(data, &c)
	if !errors.Is(err, messages.ErrMalformed) || !strings.Contains(err.Error(), "schema version 2; this build reads 1-1 (a newer major version") {
		t.Fatalf("Unmarshal = %v, want a refusal naming the newer major version", err)
	}
}
