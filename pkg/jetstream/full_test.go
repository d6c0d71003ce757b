package jetstream_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

// TestFullSnapshotStoreIsRecognised checks what a Put into a full CAIRN_SNAPSHOTS returns
// and that IsStorageFull recognises it, also wrapped; other errors are not taken for it.
func TestFullSnapshotStoreIsRecognised(t *testing.T) {
	s := natstest.Start(t)
	_, js, r := s.Resources(t, cjs.Options{Memory: true, SnapshotMaxBytes: 64 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "OBJ_"+cjs.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxBytes; got != 64<<10 {
		t.Fatalf("OBJ_%s MaxBytes = %d, want %d", cjs.SnapshotBucket, got, 64<<10)
	}
	meta := jetstream.ObjectMeta{Name: "j/1/i", Opts: &jetstream.ObjectMetaOptions{ChunkSize: 8 << 10}}
	_, err = r.Snapshots.Put(ctx, meta, bytes.NewReader(make([]byte, 100<<10)))
	if err == nil {
		t.Fatal("a 100 KiB put into a 64 KiB store succeeded")
	}
	if !cjs.IsStorageFull(err) || !cjs.IsStorageFull(fmt.Errorf("upload: %w", err)) {
		t.Fatalf("IsStorageFull(%v) = false", err)
	}
	// The chunks are published asynchronously and purged after the refusal, but the meta
	// message may have been stored meanwhile (it fits): the object can then be listed with
	// no chunks. Coordinator retention removes such an object like any orphan.
	natstest.Eventually(t, 5*time.Second, "the refused object's chunks stay", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs <= 1
	})
	if _, err := r.Snapshots.PutBytes(ctx, "j/2/i", make([]byte, 8<<10)); err != nil {
		t.Fatalf("a put that fits after the refused one: %v", err)
	}
	_, err = r.Manifests.Update(ctx, "k", []byte("x"), 99)
	if err == nil || cjs.IsStorageFull(err) {
		t.Fatalf("a revision mismatch (%v) taken for a full store", err)
	}
	if cjs.IsStorageFull(context.DeadlineExceeded) {
		t.Fatal("a timeout taken for a full store")
	}
}
