package operator_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

// saveManifest stores the manifest of checkpoint id, holding ack, under key only.
func (e *env) saveManifest(key string, id uint64, ack messages.Ack) {
	e.t.Helper()
	mf := messages.Manifest{Schema: messages.SchemaVersion, Job: testJob, CheckpointID: id, ConfigVersion: 1,
		Instances: map[string]messages.InstanceSnapshot{ack.Instance: {Incarnation: ack.Incarnation, Snapshot: ack.Snapshot, Positions: ack.Positions}}}
	data, err := messages.Marshal(&mf)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.res.Manifests.Put(e.ctx(), key, data); err != nil {
		e.t.Fatal(err)
	}
}

// info asks instance for its info.
func (e *env) info(instance string) messages.OperatorInfo {
	e.t.Helper()
	msg, err := e.nc.Request(e.subj.OperatorInfo(testJob, instance), nil, waitLong)
	if err != nil {
		e.t.Fatal(err)
	}
	var info messages.OperatorInfo
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		e.t.Fatalf("info %s: %v", msg.Data, err)
	}
	return info
}

func TestRestoreFrom(t *testing.T) {
	g := newGapEnv(t, jetstream.StreamConfig{MaxMsgs: 12})
	r := g.startWith(g.config(), refop.NewAggregator())
	pos1 := g.publishTo(g.own, 5)
	waitPosition(t, r.rt, pos1)
	ack1 := g.checkpoint(1)
	g.writeManifest(1, ack1)
	g.saveManifest(cairnjs.SavepointKey(testJob, "before-upgrade"), 1, ack1)
	pos2 := g.publishTo(g.own, 5)
	waitPosition(t, r.rt, pos2)
	g.writeManifest(2, g.checkpoint(2))
	last := g.publishTo(g.own, 5)
	waitPosition(t, r.rt, last)
	r.stop(t)

	// The env helpers fail the test itself, so the cases run on the test goroutine.
	for _, from := range []string{"before-upgrade", "1"} {
		func() {
			cfg := g.config()
			cfg.RestoreFrom = from
			agg := refop.NewAggregator()
			r := g.startWith(cfg, agg)
			info := g.info("counter-0")
			if info.RestoredCheckpoint != 1 || !strings.HasSuffix(info.RestoredFrom, from) || info.Incarnation != r.rt.Incarnation() ||
				info.InputStream != g.stream || !slices.Equal(info.InputFilters, []string{g.own}) {
				t.Fatalf("from %s: info %+v, want checkpoint 1 restored from %[1]s", from, info)
			}
			// It re-applies exactly the records after the savepoint's position.
			waitPosition(t, r.rt, last)
			keys, _, _ := aggState(t, r.rt, agg)
			checkTotals(t, keys, map[string]messages.KeyTotals{"k": {Count: 15, Sum: 15}})
			if got := r.rt.Stats().Applied; got != last-pos1 {
				t.Fatalf("applied %d records after the restore, want %d", got, last-pos1)
			}
			r.stop(t)
		}()
	}

	refusals := []struct {
		name, from, instance string
		prepare              func()
		says                 []string
		gap                  bool
	}{
		{name: "unknown checkpoint", from: "77", instance: "counter-0", says: []string{"checkpoint 77 does not exist", "retained checkpoints: 2, 1"}},
		{name: "unknown savepoint", from: "nope", instance: "counter-0", says: []string{"savepoint nope does not exist", "orders.savepoint.nope"}},
		{name: "instance not in it", from: "1", instance: "counter-9", says: []string{"holds no snapshot of instance counter-9"}},
		{name: "input gone", from: "before-upgrade", instance: "counter-0", prepare: func() { g.publishTo(g.own, 5) }, gap: true,
			says: []string{"savepoint before-upgrade", "includes sequence 5", "limit max_msgs 12"}},
		{name: "snapshot gone", from: "1", instance: "counter-0", prepare: func() {
			if err := g.coord.Snapshots().Delete(g.ctx(), ack1.Snapshot.Object); err != nil {
				t.Fatal(err)
			}
		}, says: []string{"checkpoint 1", ack1.Snapshot.Object, "missing"}},
	}
	for _, tt := range refusals {
		func() {
			if tt.prepare != nil {
				tt.prepare()
			}
			cfg := g.config()
			cfg.Instance, cfg.RestoreFrom = tt.instance, tt.from
			err := g.startErr(cfg, refop.NewAggregator())
			if !errors.Is(err, operator.ErrRestoreFrom) || errors.Is(err, operator.ErrInputGap) != tt.gap {
				t.Fatalf("%s: Run = %v, want ErrRestoreFrom (and ErrInputGap: %v)", tt.name, err, tt.gap)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s: error %q does not say %q", tt.name, err, s)
				}
			}
		}()
	}
}

func TestInputFilters(t *testing.T) {
	g := newGapEnv(t, jetstream.StreamConfig{})
	extra := strings.Replace(g.own, "counter-0", "extra", 1)
	cfg := g.config()
	cfg.InputFilters = []string{g.own, extra}
	agg := refop.NewAggregator()
	r := g.startWith(cfg, agg)
	for range 3 {
		g.publishTo(g.own, 2)
		g.publishTo(g.other, 1) // not selected
		g.publishTo(extra, 1)
	}
	last := g.publishTo(g.own, 1)
	g.publishTo(g.other, 2)
	waitPosition(t, r.rt, last)
	ack := g.checkpoint(1)
	if ack.Positions[g.stream] != last || !slices.Equal(ack.Filters[g.stream], cfg.InputFilters) {
		t.Fatalf("ack positions %v, filters %v; want %d and %v", ack.Positions, ack.Filters, last, cfg.InputFilters)
	}
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, map[string]messages.KeyTotals{"k": {Count: 10, Sum: 10}})
	g.writeManifest(1, ack)
	r.stop(t)

	// A restart resumes after the position on both filters.
	g.publishTo(extra, 2)
	last = g.publishTo(g.own, 1)
	agg2 := refop.NewAggregator()
	r2 := g.startWith(cfg, agg2)
	waitPosition(t, r2.rt, last)
	keys, _, _ = aggState(t, r2.rt, agg2)
	checkTotals(t, keys, map[string]messages.KeyTotals{"k": {Count: 13, Sum: 13}})
}
