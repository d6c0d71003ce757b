package operator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// restoreWindow is how many deltas a restore downloads ahead of the segment it applies.
const restoreWindow = 8

// restoreChain loads a Keyed's store from the member's base and deltas, each checked
// against its size and SHA-256. state.Store.Load reads the newest delta first and the
// base last: up to restoreWindow deltas are downloaded ahead into memory, in that order,
// so that a long chain of small objects does not cost a round trip each, and the base
// streams from the object store at the end. The store is replaced only when every
// segment checked out.
func (r *Runtime) restoreChain(ctx context.Context, k *Keyed, inst messages.InstanceSnapshot) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	open := func(ref messages.SnapshotRef) *verifiedObject {
		return &verifiedObject{ref: ref, open: func() (jetstream.ObjectResult, context.CancelFunc, error) {
			dctx, cancel := context.WithTimeout(ctx, transferBudget(ref.Size))
			obj, err := r.snapshots.Get(dctx, ref.Object)
			if err != nil {
				cancel()
				return nil, nil, err
			}
			return obj, cancel, nil
		}}
	}
	base := open(inst.Snapshot)
	defer base.close()
	window := make(chan struct{}, restoreWindow)
	deltas := make([]*prefetched, len(inst.Deltas))
	for i := range deltas {
		deltas[i] = &prefetched{stop: ctx.Done(), done: make(chan struct{}), window: window}
	}
	wg.Go(func() {
		for i := len(inst.Deltas) - 1; i >= 0; i-- {
			ref := inst.Deltas[i]
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() { deltas[i].fetch(open(ref)) })
		}
	})
	readers := []io.Reader{base}
	for _, d := range deltas {
		readers = append(readers, d)
	}
	if err := k.store.Load(readers...); err != nil {
		// The object's own error says what is wrong with it (missing, digest).
		if base.err != nil && !errors.Is(base.err, io.EOF) {
			return base.err
		}
		for _, d := range deltas {
			if d.err != nil && !errors.Is(d.err, io.EOF) {
				return d.err
			}
		}
		return fmt.Errorf("load state segments: %w", err)
	}
	b := inst.Snapshot
	k.restored(chain{base: &b, deltas: inst.Deltas})
	return nil
}

// prefetched is a delta downloaded ahead, read once it is complete.
type prefetched struct {
	// stop is closed when restoreChain returns.
	stop   <-chan struct{}
	done   chan struct{}
	window chan struct{}
	data   *bytes.Reader
	// err is the download's error until done; then the reader's.
	err   error
	taken bool
}

// fetch downloads and checks the object, then marks the delta done.
func (p *prefetched) fetch(o *verifiedObject) {
	defer close(p.done)
	defer o.close()
	var buf bytes.Buffer
	buf.Grow(int(o.ref.Size))
	if _, err := buf.ReadFrom(o); err != nil {
		p.err = err
		return
	}
	p.data = bytes.NewReader(buf.Bytes())
}

// Read implements io.Reader: it waits for the download, then frees its place in the
// window.
func (p *prefetched) Read(b []byte) (int, error) {
	if !p.taken {
		select {
		case <-p.done:
		case <-p.stop:
			return 0, context.Canceled
		}
		p.taken = true
		<-p.window
	}
	if p.data == nil {
		return 0, p.err
	}
	n, err := p.data.Read(b)
	if err != nil && err != io.EOF {
		p.err = err
	}
	return n, err
}

// verifiedObject reads one object, opened at its first Read, and fails at its end unless
// its size and SHA-256 are those ref gives.
type verifiedObject struct {
	ref    messages.SnapshotRef
	open   func() (jetstream.ObjectResult, context.CancelFunc, error)
	obj    jetstream.ObjectResult
	cancel context.CancelFunc
	h      hash.Hash
	n      uint64
	err    error
}

// Read implements io.Reader.
func (o *verifiedObject) Read(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.obj == nil {
		obj, cancel, err := o.open()
		if err != nil {
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				o.err = fmt.Errorf("object %s missing: %w", o.ref.Object, err)
			} else {
				o.err = fmt.Errorf("get object %s: %w", o.ref.Object, err)
			}
			return 0, o.err
		}
		o.obj, o.cancel, o.h = obj, cancel, sha256.New()
	}
	n, err := o.obj.Read(p)
	o.h.Write(p[:n])
	o.n += uint64(n)
	switch {
	case err == io.EOF:
		if o.n != o.ref.Size {
			o.err = fmt.Errorf("%w: object %s has %d bytes, the manifest says %d", errDigestMismatch, o.ref.Object, o.n, o.ref.Size)
		} else if d := digest(o.h); d != o.ref.Digest {
			o.err = fmt.Errorf("%w: object %s has digest %s, the manifest says %s", errDigestMismatch, o.ref.Object, d, o.ref.Digest)
		} else {
			o.err = io.EOF
		}
		o.close()
		return n, o.err
	case err != nil:
		o.err = fmt.Errorf("download object %s: %w", o.ref.Object, err)
		return n, o.err
	case o.n > o.ref.Size:
		o.err = fmt.Errorf("%w: object %s is longer than the %d bytes the manifest says", errDigestMismatch, o.ref.Object, o.ref.Size)
		return n, o.err
	}
	return n, nil
}

// close ends the download, if one is open.
func (o *verifiedObject) close() {
	if o.obj != nil {
		_ = o.obj.Close()
		o.obj = nil
	}
	if o.cancel != nil {
		o.cancel()
		o.cancel = nil
	}
}
