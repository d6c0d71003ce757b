package cairnjs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

func TestEnsureIsIdempotent(t *testing.T) {
	s := natstest.Start(t)
	_, js, first := s.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	ctx := context.Background()
	if _, err := first.Manifests.Put(ctx, "j.latest", []byte("x")); err != nil {
		t.Fatal(err)
	}
	again, err := cairnjs.Ensure(ctx, js, cairnjs.Options{LeaseTTL: time.Second})
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	e, err := again.Manifests.Get(ctx, "j.latest")
	if err != nil || string(e.Value()) != "x" {
		t.Fatalf("second Ensure lost data: %v %v", e, err)
	}
	names := js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if len(got) != 8 {
		t.Fatalf("streams = %v, want 5 streams + 3 KV (each job's snapshot store is apart)", got)
	}
}

func TestLeaseKeysExpireAndWatchersSeeIt(t *testing.T) {
	s := natstest.Start(t)
	_, _, r := s.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := r.Leases.Watch(ctx, "instance.>")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := r.Leases.Create(ctx, cairnjs.RegistrationKey("j", "i"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		select {
		case e := <-w.Updates():
			if e == nil || e.Operation() == jetstream.KeyValuePut {
				continue
			}
			if d := time.Since(start); d < 900*time.Millisecond {
				t.Fatalf("key gone after %s, before its 1s TTL", d)
			}
			if _, err := r.Leases.Get(ctx, cairnjs.RegistrationKey("j", "i")); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("get after expiry: %v", err)
			}
			return
		case <-ctx.Done():
			t.Fatal("watcher never saw the key expire")
		}
	}
}

func TestEnsureOnlyLooksUpWhatItIsAskedFor(t *testing.T) {
	s := natstest.Start(t)
	_, js, _ := s.Resources(t, cairnjs.Options{})
	ctx := context.Background()
	r, err := cairnjs.Ensure(ctx, js, cairnjs.Options{LookupOnly: true, Only: []string{cairnjs.InputStream, cairnjs.LeaseBucket}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Input == nil || r.Leases == nil {
		t.Fatalf("asked-for resources missing: %+v", r)
	}
	if r.Config != nil || r.Checkpoints != nil || r.Output != nil || r.Manifests != nil {
		t.Fatalf("resources not asked for were looked up: %+v", r)
	}
}

func TestEnsureLookupOnlyReportsMissing(t *testing.T) {
	s := natstest.Start(t)
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cairnjs.Ensure(context.Background(), js, cairnjs.Options{LookupOnly: true})
	if !errors.Is(err, cairnjs.ErrMissing) {
		t.Fatalf("lookup of absent resources: %v, want ErrMissing", err)
	}
}

func TestOutputAndDeadLettersAreBoundedAndInputIsNot(t *testing.T) {
	for _, o := range []cairnjs.Options{{}, {Memory: true}} {
		for _, cfg := range o.StreamConfigs() {
			switch cfg.Name {
			case cairnjs.OutputStream:
				if cfg.MaxAge < cfg.Duplicates || cfg.MaxBytes <= 0 || cfg.Discard != jetstream.DiscardOld {
					t.Fatalf("memory=%v: %s max age %s (duplicate window %s), max bytes %d, discard %v", o.Memory, cfg.Name, cfg.MaxAge, cfg.Duplicates, cfg.MaxBytes, cfg.Discard)
				}
			case cairnjs.InputStream:
				if cfg.MaxAge != 0 || cfg.MaxBytes > 0 || cfg.MaxMsgs > 0 || cfg.MaxMsgsPerSubject > 0 {
					t.Fatalf("%s has limits %+v: they would remove input a restore needs; Cairn trims it", cfg.Name, cfg)
				}
			case cairnjs.DeadLetterStream:
				// Bounded by age and per instance; no MaxBytes, which JetStream would reserve.
				if cfg.MaxAge < cfg.Duplicates || cfg.MaxMsgsPerSubject <= 0 || cfg.MaxBytes > 0 || cfg.Discard != jetstream.DiscardOld ||
					len(cfg.Subjects) != 1 || cfg.Subjects[0] != o.Subjects.DeadLetter("*", "*") {
					t.Fatalf("memory=%v: %s config %+v", o.Memory, cfg.Name, cfg)
				}
			}
		}
	}
}

func TestSnapshotStoreNames(t *testing.T) {
	if got := cairnjs.SnapshotStore("demo"); got != "CAIRN_SNAPSHOTS_demo" {
		t.Fatalf("SnapshotStore = %s", got)
	}
	if got := cairnjs.SnapshotStoreOf(""); got != cairnjs.SnapshotBucket {
		t.Fatalf("SnapshotStoreOf(\"\") = %s, want the store of before", got)
	}
	if got := cairnjs.SnapshotStoreOf("CAIRN_SNAPSHOTS_demo"); got != "CAIRN_SNAPSHOTS_demo" {
		t.Fatalf("SnapshotStoreOf = %s", got)
	}
	if got := cairnjs.ObjectStream(cairnjs.SnapshotStore("a-b_c")); got != "OBJ_CAIRN_SNAPSHOTS_a-b_c" {
		t.Fatalf("ObjectStream = %s", got)
	}
}
