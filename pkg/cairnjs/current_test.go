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

func TestCurrentEntryReadsTheKeyFromTheLeader(t *testing.T) {
	s := natstest.Start(t)
	nc, _, res := s.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, _, err := cairnjs.CurrentEntry(ctx, nc, cairnjs.ManifestBucket, "j.counter"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("absent key: %v, want ErrKeyNotFound", err)
	}
	rev, err := res.Manifests.Put(ctx, "j.counter", []byte("seven"))
	if err != nil {
		t.Fatal(err)
	}
	val, got, err := cairnjs.CurrentEntry(ctx, nc, cairnjs.ManifestBucket, "j.counter")
	if err != nil || string(val) != "seven" || got != rev {
		t.Fatalf("CurrentEntry = %q at %d, %v; want \"seven\" at %d", val, got, err, rev)
	}
	if err := res.Manifests.Delete(ctx, "j.counter"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cairnjs.CurrentEntry(ctx, nc, cairnjs.ManifestBucket, "j.counter"); !errors.Is(err, jetstream.ErrKeyNotFound) {
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
	if m, err := cairnjs.LastMsgCurrent(ctx, nc, "KV_"+cairnjs.LeaseBucket, "$KV."+cairnjs.LeaseBucket+".instance.j.i"); err != nil || m.Header.Get(jetstream.MarkerReasonHeader) == "" {
		t.Fatalf("the expired key's last message: %+v, %v; want a marker", m, err)
	}
	if _, _, err := cairnjs.CurrentEntry(ctx, nc, cairnjs.LeaseBucket, "instance.j.i"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("expired key: %v, want ErrKeyNotFound", err)
	}
	if _, err := cairnjs.LastMsgCurrent(ctx, nc, "NO_SUCH_STREAM", "x"); err == nil {
		t.Fatal("a stream that does not exist: no error")
	}
}

func TestMsgCurrentTellsAPurgedMessageFromAStoredOne(t *testing.T) {
	s := natstest.Start(t)
	nc, js, _ := s.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seqs []uint64
	for range 3 {
		ack, err := js.Publish(ctx, "cairn.input.j.i", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	st, err := js.Stream(ctx, cairnjs.InputStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("cairn.input.j.i"), jetstream.WithPurgeSequence(seqs[2])); err != nil {
		t.Fatal(err)
	}
	if _, err := cairnjs.MsgCurrent(ctx, nc, cairnjs.InputStream, seqs[1]); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("purged message: %v, want ErrMsgNotFound", err)
	}
	m, err := cairnjs.MsgCurrent(ctx, nc, cairnjs.InputStream, seqs[2])
	if err != nil || m.Sequence != seqs[2] || m.Subject != "cairn.input.j.i" {
		t.Fatalf("kept message: %+v, %v", m, err)
	}
}

func TestUpdateKeyIsCompareAndSet(t *testing.T) {
	s := natstest.Start(t)
	nc, _, res := s.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	appendX := func(cur []byte) ([]byte, error) { return append(cur, 'x'), nil }

	// Concurrent writers each add one x: none is lost.
	const writers = 8
	errs := make(chan error, writers)
	for range writers {
		go func() {
			_, err := cairnjs.UpdateKey(ctx, nc, res.Instances, "j.i", appendX)
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("UpdateKey: %v", err)
		}
	}
	e, err := res.Instances.Get(ctx, "j.i")
	if err != nil || string(e.Value()) != "xxxxxxxx" {
		t.Fatalf("after %d concurrent updates: %q, %v", writers, e.Value(), err)
	}

	rev, err := cairnjs.UpdateKey(ctx, nc, res.Instances, "j.i", func([]byte) ([]byte, error) { return nil, cairnjs.ErrNoChange })
	if err != nil || rev != e.Revision() {
		t.Fatalf("no change: revision %d, %v; want %d", rev, err, e.Revision())
	}
	refused := errors.New("refused")
	if _, err := cairnjs.UpdateKey(ctx, nc, res.Instances, "j.i", func([]byte) ([]byte, error) { return nil, refused }); !errors.Is(err, refused) {
		t.Fatalf("change error: %v, want it returned", err)
	}
	if e2, _ := res.Instances.Get(ctx, "j.i"); e2.Revision() != e.Revision() {
		t.Fatal("a change that returned an error wrote the key")
	}
}
