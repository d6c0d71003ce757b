package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/authgen"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestNeighbourCannotTouchAnotherJob is acceptance 1 of issue 16. Job alpha (instance a-0)
// and job bravo (instance b-0) run on a nats-server with the authorization `cairn auth`
// generates, every service as its own user. With bravo's instance's credential the test
// makes every attempt of the audit against alpha: register as a-0, write its instance
// record, ack for it (on its subject, on the job's subject of before, and with a forged
// body on bravo's own subject), publish a barrier, publish config events, read alpha's
// manifests and snapshots (reads, listings, and listening on their subjects and on other
// inboxes), delete or purge streams, messages, keys and objects. The server refuses each
// (a permission violation in its log for that credential; a JetStream request then times
// out client-side), the forged ack on bravo's subject is dropped by the coordinator, and
// alpha stays exact: a-0, killed and restarted afterwards, restores a checkpoint and holds
// exactly what was published, on input trimmed below its retained checkpoints. No other
// user meets a violation.
func TestNeighbourCannotTouchAnotherJob(t *testing.T) {
	const (
		alpha, a0 = "alpha", "a-0"
		a1        = "a-1" // alpha's other instance: its credential is used, its process never runs
		bravo, b0 = "bravo", "b-0"
	)
	a := startAuthServer(t, authgen.Spec{
		Jobs:     []authgen.Job{{Name: alpha, Instances: []string{a0, a1}}, {Name: bravo, Instances: []string{b0}}},
		Loadgens: []authgen.Member{{Name: "feed"}},
	})
	s := a.system(cairnjs.Options{LeaseTTL: leaseTTL, MarkerTTL: time.Second, Memory: true})
	s.startServices(alpha, a0)
	s.startOperator(bravo, b0)
	s.waitRegistered(alpha, 1)
	s.waitRegistered(bravo, 1)
	evs := s.events(alpha)
	v := s.set(alpha, `{"interval":"100ms","retain":2}`)
	s.set(bravo, `{"interval":"100ms","retain":2}`)

	// alpha's input comes from the load generator's credential.
	feeder := a.connect("loadgen.feed", nil)
	fjs, err := jetstream.New(feeder)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]messages.KeyTotals{}
	published := 0
	publish := func(n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for range n {
			ev := messages.InputEvent{Key: fmt.Sprintf("k%d", published%7), Value: int64(published%13 + 1)}
			data, _ := json.Marshal(ev)
			if _, err := fjs.Publish(ctx, subjects.Input(alpha, a0), data); err != nil {
				t.Fatalf("publish alpha's input: %v", err)
			}
			tot := want[ev.Key]
			tot.Count++
			tot.Sum += ev.Value
			want[ev.Key] = tot
			published++
		}
	}
	publish(200)
	var last *messages.CheckpointEvent
	for range 5 {
		last = nextMatching(t, evs, 20*time.Second, "a completed checkpoint of alpha", func(e *messages.CheckpointEvent) bool {
			return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
		})
	}
	latest := s.manifest(cairnjs.LatestKey(alpha))
	alphaStore := cairnjs.SnapshotStore(alpha)
	if ref := latest.Instances[a0].Snapshot; ref.Store != alphaStore {
		t.Fatalf("a-0's snapshot %+v is not in %s", ref, alphaStore)
	}
	configSeq := s.streamState(cairnjs.ConfigStream).LastSeq
	config := s.get(alpha)

	// The neighbour: bravo's instance's credential, its asynchronous errors kept.
	errs := make(chan error, 256)
	hostile := a.connect("op.bravo.b-0", errs)
	hjs, err := jetstream.New(hostile)
	if err != nil {
		t.Fatal(err)
	}
	const b0User = "op.bravo.b-0"
	// A JetStream call the server refuses is never answered: it times out client-side.
	// subject is the refused subject, or its start when it ends with a dot (a consumer's
	// name follows).
	refused := func(what string, call func(ctx context.Context) error, subject string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		err := call(ctx)
		if err == nil {
			t.Errorf("%s: succeeded", what)
		} else if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			t.Logf("%s: %v", what, err)
		}
		want := `Publish Violation - Subject "` + subject
		if !strings.HasSuffix(subject, ".") {
			want += `"`
		}
		a.waitViolation(b0User, want)
	}
	corePub := func(subject string, data []byte) {
		t.Helper()
		if err := hostile.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
		if err := hostile.Flush(); err != nil {
			t.Fatal(err)
		}
		a.waitViolation(b0User, `Publish Violation - Subject "`+subject+`"`)
	}
	subRefused := func(subject string) {
		t.Helper()
		sub, err := hostile.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		if err := hostile.Flush(); err != nil {
			t.Fatal(err)
		}
		a.waitViolation(b0User, `Subscription Violation - Subject "`+subject+`"`)
		_ = sub.Unsubscribe()
	}
	leases, err := hjs.KeyValue(context.Background(), cairnjs.LeaseBucket)
	if err != nil {
		t.Fatalf("look up %s as bravo's instance: %v", cairnjs.LeaseBucket, err)
	}
	instances, err := hjs.KeyValue(context.Background(), cairnjs.InstanceBucket)
	if err != nil {
		t.Fatalf("look up %s as bravo's instance: %v", cairnjs.InstanceBucket, err)
	}
	manifests, err := hjs.KeyValue(context.Background(), cairnjs.ManifestBucket)
	if err != nil {
		t.Fatalf("look up %s as bravo's instance: %v", cairnjs.ManifestBucket, err)
	}

	// Register as alpha's instance (a newer incarnation would replace a-0), and claim its
	// instance record.
	reg, _ := messages.Marshal(&messages.Registration{Schema: messages.SchemaVersion, Job: alpha, Instance: a0, Incarnation: "hostile", StartedAt: time.Now()})
	refused("register as a-0", func(ctx context.Context) error {
		_, err := leases.Put(ctx, cairnjs.RegistrationKey(alpha, a0), reg)
		return err
	}, "$KV."+cairnjs.LeaseBucket+"."+cairnjs.RegistrationKey(alpha, a0))
	rec, _ := messages.Marshal(&messages.InstanceRecord{Schema: messages.SchemaVersion, Job: alpha, Instance: a0, Incarnation: "hostile"})
	refused("claim a-0's instance record", func(ctx context.Context) error {
		_, err := instances.Put(ctx, cairnjs.InstanceKey(alpha, a0), rec)
		return err
	}, "$KV."+cairnjs.InstanceBucket+"."+cairnjs.InstanceKey(alpha, a0))

	// Ack for alpha: a-0's snapshot of an older checkpoint at later positions (what lost
	// records in the audit), on a-0's subject and on alpha's subject of before.
	inst := latest.Instances[a0]
	forged, _ := messages.Marshal(&messages.Ack{
		Schema: messages.SchemaVersion, Job: alpha, CheckpointID: last.CheckpointID + 1, Instance: a0, Incarnation: inst.Incarnation,
		Kind: messages.AckDone, Snapshot: inst.Snapshot, Positions: map[string]uint64{cairnjs.InputStream: inst.Positions[cairnjs.InputStream] + 20},
	})
	corePub(subjects.InstanceAck(alpha, a0), forged)
	corePub(subjects.Ack(alpha), forged)
	// On its own subject an instance may publish, but an ack naming another job or
	// instance there is dropped by the coordinator: bravo's instance acking for alpha, and
	// alpha's other instance acking as a-0 (whose incarnation it can read).
	if err := hostile.Publish(subjects.InstanceAck(bravo, b0), forged); err != nil {
		t.Fatal(err)
	}
	sibling := a.connect("op.alpha.a-1", nil)
	if err := sibling.Publish(subjects.InstanceAck(alpha, a1), forged); err != nil {
		t.Fatal(err)
	}
	if err := sibling.Flush(); err != nil {
		t.Fatal(err)
	}

	// Barriers and config events.
	huge, _ := messages.Marshal(&messages.Barrier{Schema: messages.SchemaVersion, Job: alpha, CheckpointID: 1 << 50, Token: 1 << 50, ConfigVersion: 1, TriggeredAt: time.Now()})
	corePub(subjects.Barrier(alpha), huge)
	corePub(subjects.Barrier(bravo), huge)
	corePub(subjects.ConfigEvents(alpha), []byte(`{"interval":"24h"}`))
	corePub(subjects.ConfigHead(alpha), []byte(`{"interval":"24h"}`))
	corePub(subjects.ConfigSet(alpha), []byte(`{"interval":"24h"}`))

	// Read alpha's manifests: a get, a read from the bucket's leader, a listing, a watch of
	// every key.
	refused("get alpha.latest", func(ctx context.Context) error {
		_, err := manifests.Get(ctx, cairnjs.LatestKey(alpha))
		return err
	}, "$JS.API.DIRECT.GET.KV_"+cairnjs.ManifestBucket+".$KV."+cairnjs.ManifestBucket+"."+cairnjs.LatestKey(alpha))
	refused("read alpha.latest from the leader", func(ctx context.Context) error {
		_, err := cairnjs.LastMsgCurrent(ctx, hostile, "KV_"+cairnjs.ManifestBucket, "$KV."+cairnjs.ManifestBucket+"."+cairnjs.LatestKey(alpha))
		return err
	}, "$JS.API.STREAM.MSG.GET.KV_"+cairnjs.ManifestBucket)
	refused("list alpha's manifests", func(ctx context.Context) error {
		kl, err := manifests.ListKeysFiltered(ctx, alpha+".>")
		if err != nil {
			return err
		}
		for range kl.Keys() {
			return errors.New("a key was listed")
		}
		return ctx.Err()
	}, "$JS.API.CONSUMER.CREATE.KV_"+cairnjs.ManifestBucket+".")
	refused("watch every manifest", func(ctx context.Context) error {
		_, err := hjs.OrderedConsumer(ctx, "KV_"+cairnjs.ManifestBucket, jetstream.OrderedConsumerConfig{})
		return err
	}, "$JS.API.CONSUMER.CREATE.KV_"+cairnjs.ManifestBucket+".")
	subRefused("$KV." + cairnjs.ManifestBucket + ".>")

	// Read alpha's snapshots: look the store up, an object's info, its chunks, a batched
	// look-up; listen on the store's subjects and on a-0's and everyone's inboxes.
	obj := inst.Snapshot.Object
	refused("look up alpha's snapshot store", func(ctx context.Context) error {
		_, err := hjs.ObjectStore(ctx, alphaStore)
		return err
	}, "$JS.API.STREAM.INFO."+cairnjs.ObjectStream(alphaStore))
	meta := fmt.Sprintf("$O.%s.M.%s", alphaStore, base64.URLEncoding.EncodeToString([]byte(obj)))
	refused("get the info of a-0's snapshot", func(ctx context.Context) error {
		_, err := hostile.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+cairnjs.ObjectStream(alphaStore)+"."+meta, nil)
		return err
	}, "$JS.API.DIRECT.GET."+cairnjs.ObjectStream(alphaStore)+"."+meta)
	refused("look up a-0's snapshot in a batch", func(ctx context.Context) error {
		_, err := hostile.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+cairnjs.ObjectStream(alphaStore), fmt.Appendf(nil, `{"multi_last":[%q],"batch":1}`, meta))
		return err
	}, "$JS.API.DIRECT.GET."+cairnjs.ObjectStream(alphaStore))
	refused("read alpha's snapshot chunks", func(ctx context.Context) error {
		_, err := hjs.OrderedConsumer(ctx, cairnjs.ObjectStream(alphaStore), jetstream.OrderedConsumerConfig{FilterSubjects: []string{"$O." + alphaStore + ".C.>"}})
		return err
	}, "$JS.API.CONSUMER.CREATE."+cairnjs.ObjectStream(alphaStore)+".")
	subRefused("$O." + alphaStore + ".>")
	subRefused(a.user("op.alpha.a-0").InboxPrefix + ".>")
	subRefused("_INBOX.>")
	subRefused(subjects.Barrier(alpha))
	subRefused(subjects.InstanceAck(alpha, "*"))
	subRefused(subjects.Input(alpha, a0))

	// Delete or purge anything: streams, messages, alpha's keys and objects, the input.
	streams := append(sharedStreamNames(), cairnjs.ObjectStream(alphaStore), cairnjs.ObjectStream(cairnjs.SnapshotStore(bravo)))
	for _, st := range streams {
		for _, call := range []string{"STREAM.PURGE.", "STREAM.DELETE.", "STREAM.MSG.DELETE.", "STREAM.UPDATE."} {
			subject := "$JS.API." + call + st
			refused(call+st, func(ctx context.Context) error {
				_, err := hostile.RequestWithContext(ctx, subject, []byte(`{"seq":1}`))
				return err
			}, subject)
		}
	}
	refused("delete alpha.latest", func(ctx context.Context) error {
		return manifests.Delete(ctx, cairnjs.LatestKey(alpha))
	}, "$KV."+cairnjs.ManifestBucket+"."+cairnjs.LatestKey(alpha))
	refused("purge alpha's counter", func(ctx context.Context) error {
		return manifests.Purge(ctx, cairnjs.CounterKey(alpha))
	}, "$KV."+cairnjs.ManifestBucket+"."+cairnjs.CounterKey(alpha))
	refused("delete a-0's registration", func(ctx context.Context) error {
		return leases.Delete(ctx, cairnjs.RegistrationKey(alpha, a0))
	}, "$KV."+cairnjs.LeaseBucket+"."+cairnjs.RegistrationKey(alpha, a0))
	del := nats.NewMsg(meta)
	del.Data = []byte(`{"deleted":true}`)
	refused("delete a-0's snapshot", func(ctx context.Context) error {
		_, err := hjs.PublishMsg(ctx, del)
		return err
	}, meta)
	refused("list alpha's input consumers", func(ctx context.Context) error {
		_, err := hostile.RequestWithContext(ctx, "$JS.API.CONSUMER.NAMES."+cairnjs.InputStream, nil)
		return err
	}, "$JS.API.CONSUMER.NAMES."+cairnjs.InputStream)
	corePub(subjects.Input(alpha, a0), []byte(`{"key":"k0","value":1000}`))
	refused("read alpha's input", func(ctx context.Context) error {
		_, err := hjs.OrderedConsumer(ctx, cairnjs.InputStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjects.Input(alpha, a0)}})
		return err
	}, "$JS.API.CONSUMER.CREATE."+cairnjs.InputStream+".")

	// The client saw the core publishes and subscriptions refused too.
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("asynchronous error %v, want a permissions violation", err)
		}
	default:
		t.Error("the hostile connection received no permissions violation")
	}

	// alpha goes on: checkpoints complete with a-0, its config and the config stream are
	// unchanged, and a-0 was never replaced.
	publish(100)
	after := nextMatching(t, evs, 20*time.Second, "a completed checkpoint of alpha after the attempts", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.CheckpointID > last.CheckpointID+1
	})
	if len(after.Participants) != 1 || after.Participants[0] != a0 {
		t.Fatalf("checkpoint %d completed with %v, want a-0", after.CheckpointID, after.Participants)
	}
	if got := s.get(alpha); got.Version != config.Version || got.Interval != config.Interval {
		t.Fatalf("alpha's config went from version %d (%s) to %d (%s)", config.Version, config.Interval, got.Version, got.Interval)
	}
	if seq := s.streamState(cairnjs.ConfigStream).LastSeq; seq != configSeq {
		t.Fatalf("%s's last sequence moved from %d to %d", cairnjs.ConfigStream, configSeq, seq)
	}
	natstest.Eventually(t, 10*time.Second, "the forged acks on bravo's and a-1's subjects were not both dropped", func() bool {
		return strings.Count(s.coordinatorLog(), "ack dropped: its job or instance does not match its subject") >= 2
	})

	// Exact after a crash: the input is trimmed, so a replay from its start cannot pass.
	s.waitInputTrimmed(alpha, a0, 1)
	s.wantExact(alpha, a0, want)
	s.crash(a0)
	publish(50)
	s.startOperator(alpha, a0)
	s.wantExact(alpha, a0, want)
	if st := s.operatorState(alpha, a0); !maps.Equal(st.Keys, want) {
		t.Fatalf("a-0 after its restart holds %v, want %v", st.Keys, want)
	}
	a.noViolations(b0User)
	t.Logf("%d attempts refused for %s; alpha exact over %d events after a restart", len(a.violations(b0User)), b0User, published)
}

// sharedStreamNames are the streams every job shares.
func sharedStreamNames() []string {
	out := []string{"KV_" + cairnjs.ManifestBucket, "KV_" + cairnjs.LeaseBucket, "KV_" + cairnjs.InstanceBucket}
	for _, cfg := range (cairnjs.Options{}).StreamConfigs() {
		out = append(out, cfg.Name)
	}
	return out
}
