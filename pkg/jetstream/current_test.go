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
	if _, err := cjs.LastMsgCurrent(ctx, nc, "NO_SUCH_STREAM", "x"); err == nil {
		t.Fatal("a stream that does not exist: no error")
	}
}
