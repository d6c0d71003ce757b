package operator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// restoreChain loads a Keyed's store from the member's base and deltas, streaming each
// object from the store in order and checking its size and SHA-256 at its end; the
// store is replaced only when every segment checked out.
func (r *Runtime) restoreChain(ctx context.Context, k *Keyed, inst messages.InstanceSnapshot) error {
	refs := inst.Refs()
	readers := make([]io.Reader, len(refs))
	objects := make([]*verifiedObject, len(refs))
	for i, ref := range refs {
		objects[i] = &verifiedObject{ref: ref, open: func() (jetstream.ObjectResult, context.CancelFunc, error) {
			dctx, cancel := context.WithTimeout(ctx, transferBudget(ref.Size))
			obj, err := r.snapshots.Get(dctx, ref.Object)
			if err != nil {
				cancel()
				return nil, nil, err
			}
			return obj, cancel, nil
		}}
		readers[i] = objects[i]
	}
	defer func() {
		for _, o := range objects {
			o.close()
		}
	}()
	if err := k.store.Load(readers...); err != nil {
		for _, o := range objects {
			// The object's own error says what is wrong with it (missing, digest).
			if o.err != nil && !errors.Is(o.err, io.EOF) {
				return o.err
			}
		}
		return fmt.Errorf("load state segments: %w", err)
	}
	base := inst.Snapshot
	k.restored(chain{base: &base, deltas: inst.Deltas})
	return nil
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
