package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

const (
	// restoreFetchers is how many segments a restore downloads at a time.
	restoreFetchers = 4
	// restoreBuffer bounds the bytes a restore holds downloaded ahead of what it has
	// applied, over every segment.
	restoreBuffer = 64 << 20
	// fetchChunk is how much a segment download reads at a time.
	fetchChunk = 256 << 10
)

// restoreChain loads a Keyed's store from the member's base and deltas, each checked
// against its size and SHA-256. state.Store.Load reads the newest delta first and the
// base last; the segments are downloaded in that order, up to restoreFetchers at a time
// and up to restoreBuffer bytes ahead of what Load has read, so that downloads overlap
// each other and the load, and a long chain of small objects does not cost a round
// trip each. The store is replaced only when every segment checked out.
func (r *Runtime) restoreChain(ctx context.Context, k *keyed, inst messages.InstanceSnapshot) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	refs := append([]messages.SnapshotRef{inst.Snapshot}, inst.Deltas...)
	streams := fetchSegments(ctx, &wg, refs, func(ref messages.SnapshotRef) *verifiedObject { return r.openSnapshot(ctx, ref) }, restoreFetchers, restoreBuffer)
	readers := make([]io.Reader, len(streams))
	for i, st := range streams {
		readers[i] = st
	}
	if err := k.store.Load(readers...); err != nil {
		// The object's own error says what is wrong with it (missing, digest).
		for _, st := range streams {
			if err := st.failure(); err != nil {
				return err
			}
		}
		return fmt.Errorf("load state segments: %w", err)
	}
	b := inst.Snapshot
	k.restored(chain{base: &b, deltas: inst.Deltas})
	return nil
}

// fetchSegments starts downloading the objects refs name, the last first, up to fetchers
// at a time and up to limit bytes ahead of what is read from the streams it returns
// (read them in that order too); the downloads run in wg and stop when ctx ends.
func fetchSegments(ctx context.Context, wg *sync.WaitGroup, refs []messages.SnapshotRef, open func(messages.SnapshotRef) *verifiedObject, fetchers int, limit int64) []*segmentStream {
	pool := newFetchPool(ctx, limit)
	streams := make([]*segmentStream, len(refs))
	for i := range streams {
		streams[i] = &segmentStream{pool: pool}
	}
	wg.Go(func() {
		slots := make(chan struct{}, fetchers)
		for i := len(refs) - 1; i >= 0; i-- {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-slots }()
				streams[i].fetch(open(refs[i]))
			})
		}
	})
	return streams
}

// openObject returns the reader of the object ref names in store, opened at its first
// read. The download's context is ctx's values with a deadline of transferBudget but
// not ctx's cancellation: the object store client unsubscribes a cancelled download
// without ending its reader, which would then block until the deadline. A stopped
// restore ends its downloads by closing them between reads (segmentStream.fetch).
func openObject(ctx context.Context, store objectStore, ref messages.SnapshotRef) *verifiedObject {
	return &verifiedObject{ref: ref, open: func() (jetstream.ObjectResult, context.CancelFunc, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), transferBudget(ref.Size))
		obj, err := store.Get(dctx, ref.Object)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		return obj, cancel, nil
	}}
}

// fetchPool holds the segments downloaded ahead of a restore's load, within a byte
// budget: a download waits while the budget is spent, except that the segment being read
// waits only for its own unread bytes (so that it always proceeds): at most twice the
// budget is held. Chunks that were read are reused.
type fetchPool struct {
	mu   sync.Mutex
	cond *sync.Cond
	// held is the bytes downloaded and not read yet, over every segment.
	held, limit int64
	current     *segmentStream
	stopped     bool
	free        [][]byte
}

// newFetchPool returns a pool of limit bytes whose waits end when ctx does.
func newFetchPool(ctx context.Context, limit int64) *fetchPool {
	p := &fetchPool{limit: limit}
	p.cond = sync.NewCond(&p.mu)
	context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		p.cond.Broadcast()
	})
	return p
}

// chunk returns a buffer of fetchChunk bytes.
func (p *fetchPool) chunk() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		c := p.free[n-1]
		p.free = p.free[:n-1]
		return c[:fetchChunk]
	}
	return make([]byte, fetchChunk)
}

// segmentStream is one segment downloading into memory while the load reads it.
type segmentStream struct {
	pool *fetchPool
	// chunks are downloaded and not read yet, from chunks[0][off:]; err is the
	// download's end: io.EOF when it completed, checked.
	chunks [][]byte
	off    int
	err    error
	// unread is the bytes of chunks not read yet.
	unread int64
}

// full reports whether a download of n more bytes for s must wait.
func (p *fetchPool) full(s *segmentStream, n int) bool {
	if p.stopped || n == 0 {
		return false
	}
	if p.current == s {
		return s.unread > 0 && s.unread+int64(n) > p.limit
	}
	return p.held+int64(n) > p.limit
}

// fetch downloads o into the stream.
func (s *segmentStream) fetch(o *verifiedObject) {
	defer o.close()
	p := s.pool
	for {
		c := p.chunk()
		n, err := io.ReadFull(o, c)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF // the object ended, checked, inside the chunk
		}
		p.mu.Lock()
		for p.full(s, n) {
			p.cond.Wait()
		}
		if p.stopped && err == nil {
			err = context.Canceled // the deferred close ends the download
		}
		if n > 0 {
			s.chunks = append(s.chunks, c[:n])
			p.held += int64(n)
			s.unread += int64(n)
		}
		if err != nil {
			s.err = err
		}
		p.mu.Unlock()
		p.cond.Broadcast()
		if err != nil {
			return
		}
	}
}

// Read implements io.Reader: it returns what is downloaded, waiting for more while the
// download runs.
func (s *segmentStream) Read(b []byte) (int, error) {
	p := s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current != s {
		p.current = s
		p.cond.Broadcast()
	}
	for len(s.chunks) == 0 && s.err == nil && !p.stopped {
		p.cond.Wait()
	}
	if len(s.chunks) == 0 {
		if s.err == nil {
			return 0, context.Canceled
		}
		return 0, s.err
	}
	n := copy(b, s.chunks[0][s.off:])
	s.off += n
	p.held -= int64(n)
	s.unread -= int64(n)
	if s.off == len(s.chunks[0]) {
		p.free = append(p.free, s.chunks[0])
		s.chunks[0] = nil
		s.chunks, s.off = s.chunks[1:], 0
	}
	p.cond.Broadcast()
	return n, nil
}

// failure returns the download's error, if it failed.
func (s *segmentStream) failure() error {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	if s.err != nil && !errors.Is(s.err, io.EOF) {
		return s.err
	}
	return nil
}

// verifiedObject reads one object, opened at its first Read, and fails unless it is the
// object ref names: its stored size and SHA-256 must be those of ref, and the object
// store client fails the read at the end when the content does not hash to its stored
// digest (so the content is not hashed twice).
type verifiedObject struct {
	ref    messages.SnapshotRef
	open   func() (jetstream.ObjectResult, context.CancelFunc, error)
	obj    jetstream.ObjectResult
	cancel context.CancelFunc
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
		o.obj, o.cancel = obj, cancel
		if info, err := obj.Info(); err != nil || info.Size != o.ref.Size || info.Digest != o.ref.Digest {
			o.err = fmt.Errorf("%w: object %s is not the snapshot the manifest references (stored %s)", errDigestMismatch, o.ref.Object, stored(info, err))
			o.close()
			return 0, o.err
		}
	}
	n, err := o.obj.Read(p)
	o.n += uint64(n)
	switch {
	case err == io.EOF:
		if o.n != o.ref.Size {
			o.err = fmt.Errorf("%w: object %s has %d bytes, the manifest says %d", errDigestMismatch, o.ref.Object, o.n, o.ref.Size)
		} else {
			o.err = io.EOF
		}
		o.close()
		return n, o.err
	case errors.Is(err, jetstream.ErrDigestMismatch):
		o.err = fmt.Errorf("%w: object %s: %w", errDigestMismatch, o.ref.Object, err)
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

// stored describes an object's stored size and digest for an error message.
func stored(info *jetstream.ObjectInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d bytes, %s", info.Size, info.Digest)
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
