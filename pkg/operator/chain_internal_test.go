package operator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestFetchSegments downloads objects larger than the byte budget, more of them than
// fetchers, and reads them last first as a restore does: every stream yields its object
// exactly, whatever the budget; a reference whose digest does not match fails its stream
// with errDigestMismatch; stopping midway ends every download.
func TestFetchSegments(t *testing.T) {
	nc := natstest.Start(t).Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "FETCH"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var refs []messages.SnapshotRef
	var contents [][]byte
	for i, size := range []int{0, 10, 3 * fetchChunk, 70 << 10, 1, 2*fetchChunk + 17, 5000} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		name := fmt.Sprintf("seg-%d", i)
		if _, err := obs.PutBytes(ctx, name, data); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		h.Write(data)
		refs = append(refs, messages.SnapshotRef{Object: name, Size: uint64(size), Digest: digest(h)})
		contents = append(contents, data)
	}
	openIn := func(ctx context.Context) func(messages.SnapshotRef) *verifiedObject {
		return func(ref messages.SnapshotRef) *verifiedObject { return openObject(ctx, obs, ref) }
	}
	open := openIn(ctx)
	for _, limit := range []int64{1, 64 << 10, restoreBuffer} {
		t.Run(fmt.Sprint("budget ", limit), func(t *testing.T) {
			var wg sync.WaitGroup
			streams := fetchSegments(ctx, &wg, refs, open, 3, limit)
			for i := len(streams) - 1; i >= 0; i-- {
				got, err := io.ReadAll(streams[i])
				if err != nil {
					t.Fatalf("segment %d: %v", i, err)
				}
				if !bytes.Equal(got, contents[i]) {
					t.Fatalf("segment %d: read %d bytes that differ from the %d stored", i, len(got), len(contents[i]))
				}
			}
			wg.Wait()
		})
	}
	t.Run("wrong digest", func(t *testing.T) {
		bad := append([]messages.SnapshotRef(nil), refs...)
		bad[2].Digest = refs[3].Digest
		sctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		streams := fetchSegments(sctx, &wg, bad, openIn(sctx), 2, 1)
		for i := len(streams) - 1; i > 2; i-- {
			if _, err := io.ReadAll(streams[i]); err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
		}
		if _, err := io.ReadAll(streams[2]); !errors.Is(err, errDigestMismatch) {
			t.Fatalf("a reference with another digest read with %v; want errDigestMismatch", err)
		}
		if err := streams[2].failure(); !errors.Is(err, errDigestMismatch) {
			t.Fatalf("failure() = %v", err)
		}
		stop() // as restoreChain does when the load fails: the other downloads end
		wg.Wait()
	})
	t.Run("stopped", func(t *testing.T) {
		sctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		streams := fetchSegments(sctx, &wg, refs, openIn(sctx), 3, 1)
		if _, err := io.ReadFull(streams[len(streams)-1], make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		stop()
		wg.Wait() // every download ends although nothing reads them
		if _, err := io.ReadAll(streams[2]); err == nil {
			t.Fatal("a stopped stream read to its end")
		}
	})
}
