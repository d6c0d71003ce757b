package integration

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestCheckpointWithThreeOperatorsCompletes(t *testing.T) {
	instances := []string{"counter-0", "counter-1", "counter-2"}
	s := startSystem(t, "demo", instances...)
	s.waitRegistered("demo", 3)
	for _, i := range instances {
		s.publish("demo", i, 0, 20)
	}
	evs := s.events("demo")
	v := s.set("demo", `{"interval":"200ms"}`)
	ev := nextMatching(t, evs, 10*time.Second, "completed checkpoint under the new version", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	if !slices.Equal(ev.Participants, instances) || ev.Bytes == 0 {
		t.Fatalf("completed event %+v", ev)
	}
	ctx := context.Background()
	entry, err := s.res.Manifests.Get(ctx, cairnjs.ManifestKey("demo", ev.CheckpointID))
	if err != nil {
		t.Fatalf("manifest %d: %v", ev.CheckpointID, err)
	}
	var m messages.Manifest
	if err := messages.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatal(err)
	}
	if m.CheckpointID != ev.CheckpointID || m.ConfigVersion != v.Version || len(m.Instances) != 3 || m.Bytes() != ev.Bytes {
		t.Fatalf("manifest %+v does not match event %+v", m, ev)
	}
	var latest messages.Manifest
	latestAtLeast := func() bool {
		e, err := s.res.Manifests.Get(ctx, cairnjs.LatestKey("demo"))
		return err == nil && messages.Unmarshal(e.Value(), &latest) == nil && latest.CheckpointID >= m.CheckpointID
	}
	if !latestAtLeast() {
		t.Fatalf("demo.latest is not at or past checkpoint %d", m.CheckpointID)
	}
	for _, inst := range instances {
		snap := m.Instances[inst]
		obj, err := s.snapshots("demo").Get(ctx, snap.Snapshot.Object)
		if err != nil {
			t.Fatalf("%s: object %s: %v", inst, snap.Snapshot.Object, err)
		}
		data, err := io.ReadAll(obj)
		_ = obj.Close()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if got := "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]); got != snap.Snapshot.Digest || uint64(len(data)) != snap.Snapshot.Size {
			t.Fatalf("%s: object digest %s size %d, manifest says %s size %d", inst, got, len(data), snap.Snapshot.Digest, snap.Snapshot.Size)
		}
		if snap.Positions[cairnjs.InputStream] == 0 {
			t.Fatalf("%s: no input position in the manifest", inst)
		}
	}
}

func TestStatusReportsTheJob(t *testing.T) {
	s := startSystem(t, "st", "a-0")
	s.waitRegistered("st", 1)
	evs := s.events("st")
	v := s.set("st", `{"interval":"150ms","retain":2}`)
	done := nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	st := s.status("st")
	if st.Config.Version != v.Version || st.AppliedAt == nil || st.EffectiveInterval != "150ms" || st.Holder == "" || st.Holder != st.Coordinator {
		t.Fatalf("status %+v", st)
	}
	if st.LastCompleted == nil || st.LastCompleted.ID < done.CheckpointID || st.Completed == 0 || !slices.Equal(st.Instances, []string{"a-0"}) {
		t.Fatalf("status %+v", st)
	}
	if st.NextTrigger == nil && st.Waiting == "" {
		t.Fatalf("status neither schedules nor says why: %+v", st)
	}
	m := s.request(subjects.Status("nope"), "")
	if m.Header.Get("Nats-Service-Error-Code") != "404" {
		t.Fatalf("status of an unknown job: %q %s", m.Header.Get("Nats-Service-Error-Code"), m.Data)
	}
	m = s.request("cairn.status.bad$name", "")
	if m.Header.Get("Nats-Service-Error-Code") != "400" {
		t.Fatalf("status of a bad job name: %q %s", m.Header.Get("Nats-Service-Error-Code"), m.Data)
	}
	// Retention keeps 2 manifests; older snapshot objects go.
	for range 4 {
		nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool { return e.Outcome == messages.Completed })
	}
	natstest.Eventually(t, 10*time.Second, "retention down to 2 manifests", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, err := natstest.Keys(ctx, s.res.Manifests, "st.*")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, k := range keys {
			if k != "st.latest" && k != "st.counter" {
				n++
			}
		}
		return n == 2
	})
}
