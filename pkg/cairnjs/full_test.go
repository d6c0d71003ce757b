package cairnjs_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// TestFullSnapshotStoreIsRecognised checks what a Put into a full job snapshot store
// returns and that IsStorageFull recognises it, also wrapped; other errors are not taken
// for it.
func TestFullSnapshotStoreIsRecognised(t *testing.T) {
	s := natstest.Start(t)
	_, js, r := s.Resources(t, cairnjs.Options{Memory: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := cairnjs.EnsureSnapshotStore(ctx, js, cairnjs.Options{Memory: true, SnapshotMaxBytes: 64 << 10}, "j")
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, cairnjs.ObjectStream(cairnjs.SnapshotStore("j")))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxBytes; got != 64<<10 {
		t.Fatalf("%s MaxBytes = %d, want %d", st.CachedInfo().Config.Name, got, 64<<10)
	}
	meta := jetstream.ObjectMeta{Name: "j/1/i", Opts: &jetstream.ObjectMetaOptions{ChunkSize: 8 << 10}}
	_, err = obs.Put(ctx, meta, bytes.NewReader(make([]byte, 100<<10)))
	if err == nil {
		t.Fatal("a 100 KiB put into a 64 KiB store succeeded")
	}
	if !cairnjs.IsStorageFull(err) || !cairnjs.IsStorageFull(fmt.Errorf("upload: %w", err)) {
		t.Fatalf("IsStorageFull(%v) = false", err)
	}
	// The chunks are published asynchronously and purged after the refusal, but the meta
	// message may have been stored meanwhile (it fits): the object can then be listed with
	// no chunks. Coordinator retention removes such an object like any orphan.
	natstest.Eventually(t, 5*time.Second, "the refused object's chunks stay", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs <= 1
	})
	if _, err := obs.PutBytes(ctx, "j/2/i", make([]byte, 8<<10)); err != nil {
		t.Fatalf("a put that fits after the refused one: %v", err)
	}
	_, err = r.Manifests.Update(ctx, "k", []byte("x"), 99)
	if err == nil || cairnjs.IsStorageFull(err) {
		t.Fatalf("a revision mismatch (%v) taken for a full store", err)
	}
	if cairnjs.IsStorageFull(context.DeadlineExceeded) {
		t.Fatal("a timeout taken for a full store")
	}
}

// TestUnlimitedSnapshotStoreFillsTheAccount checks that a job's store without a limit of
// its own (the default) is bounded by the account's JetStream storage, and that a put the
// account has no room for is recognised as a full store too.
func TestUnlimitedSnapshotStoreFillsTheAccount(t *testing.T) {
	s := natstest.StartConfig(t, `accounts { A { jetstream { max_file: 256KB, max_mem: 0 }, users: [{user: a, password: a}] } }`, &natstest.LogBuffer{})
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: s.URL, User: "a", Password: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := cairnjs.EnsureSnapshotStore(ctx, js, cairnjs.Options{}, "j")
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, cairnjs.ObjectStream(cairnjs.SnapshotStore("j")))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxBytes; got != -1 {
		t.Fatalf("MaxBytes = %d, want -1 (no limit of its own)", got)
	}
	meta := jetstream.ObjectMeta{Name: "j/1/i", Opts: &jetstream.ObjectMetaOptions{ChunkSize: 8 << 10}}
	_, err = obs.Put(ctx, meta, bytes.NewReader(make([]byte, 512<<10)))
	if err == nil {
		t.Fatal("a 512 KiB put into an account of 256 KB succeeded")
	}
	if !cairnjs.IsStorageFull(err) {
		t.Fatalf("IsStorageFull(%v) = false", err)
	}
}
