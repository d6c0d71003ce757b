package jetstream_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

func TestCurrentEntryReadsTheKeyFromTheLeader(t *testing.T) {
	s := natstest.Start(t)
	nc, _, res := s.Resources(t, cjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, _, err := cjs.CurrentEntry(ctx, nc, cjs.ManifestBucket, "j.counter"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("absent key: %v, want ErrKeyNotFound", err)
	}
	rev, err := res.Manifests.Put(ctx, "j.counter", []byte("seven"))
	if err != nil {
		t.Fatal(err)
	}
	val, got, err := cjs.CurrentEntry(ctx, nc, cjs.ManifestBucket, "j.counter")
	if err != nil || string(val) != "seven" || got != rev {
		t.Fatalf("CurrentEntry = %q at %d, %v; want \"seven\" at %d", val, got, err, rev)
	}
	if err := res.Manifests.Delete(ctx, "j.counter"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cjs.CurrentEntry(ctx, nc, cjs.ManifestBucket, "j.counter"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("deleted key: %v, want ErrKeyNotFound", err)
	}
	// A key that expired by the bucket's TTL leaves a marker (LimitMarkerTTL), not a value.
	if _, err := res.Leases.Put(ctx, "instance.j.i", []byte("registration")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "the key to expire", func() bool {
		_, err := res.Leases.Get(ctx, "instance.j.i")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if m, err := cjs.LastMsgCurrent(ctx, nc, "KV_"+cjs.LeaseBucket, "$KV."+cjs.LeaseBucket+".instance.j.i"); err != nil || m.Header.Get(jetstream.MarkerReasonHeader) == "" {
		t.Fatalf("the expired key's last message: %+v, %v; want a marker", m, err)
	}
	if _, _, err := cjs.CurrentEntry(ctx, nc, cjs.LeaseBucket, "instance.j.i"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("expired key: %v, want ErrKeyNotFound", err)
	}
	if _, err := cjs.LastMsgCurrent(ctx, nc, "NO_SUCH_STREAM", "x"); err == nil {
		t.Fatal("a stream that does not exist: no error")
	}
}
