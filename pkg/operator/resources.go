package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// lookupTimeout bounds one look-up attempt of a resource.
const lookupTimeout = 10 * time.Second

// lookup looks up the resources the runtime uses, and only those: the CAIRN_MANIFESTS,
// CAIRN_LEASES and CAIRN_INSTANCES buckets, the input stream, the CAIRN_CHECKPOINTS stream
// (member events) and, for a Producer, the output stream. While one does not exist yet it
// waits with retry.Do, logging one line when it starts waiting for it, until ctx ends. The
// job's snapshot store is looked up when first used (snapshotStores): the coordinator
// creates it when it starts coordinating the job, which may be after the instance
// registers.
func (r *Runtime) lookup(ctx context.Context) error {
	var err error
	if err = r.await(ctx, "bucket", cairnjs.ManifestBucket, func(ctx context.Context) (err error) {
		r.manifests, err = r.js.KeyValue(ctx, cairnjs.ManifestBucket)
		return err
	}); err != nil {
		return err
	}
	if err = r.await(ctx, "bucket", cairnjs.LeaseBucket, func(ctx context.Context) (err error) {
		r.leases, err = r.js.KeyValue(ctx, cairnjs.LeaseBucket)
		return err
	}); err != nil {
		return err
	}
	if err = r.await(ctx, "bucket", cairnjs.InstanceBucket, func(ctx context.Context) (err error) {
		r.instances, err = r.js.KeyValue(ctx, cairnjs.InstanceBucket)
		return err
	}); err != nil {
		return err
	}
	streams := []string{r.cfg.InputStream, cairnjs.CheckpointStream}
	if r.cp.producer() != nil {
		streams = append(streams, r.cfg.OutputStream)
	}
	for _, name := range streams {
		if err := r.await(ctx, "stream", name, func(ctx context.Context) error {
			_, err := r.js.Stream(ctx, name)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// await calls get until it succeeds. A resource that does not exist is logged once at
// info level; any other error at warn level at every attempt.
func (r *Runtime) await(ctx context.Context, kind, name string, get func(context.Context) error) error {
	waiting := false
	err := retry.Do(ctx, func(ctx context.Context) error {
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
		return get(lctx)
	}, func(err error, wait time.Duration) {
		switch {
		case !missing(err):
			r.log.Warn(fmt.Sprintf("look up %s %s", kind, name), "error", err, "retry_in", wait)
		case !waiting:
			r.log.Info(fmt.Sprintf("waiting for %s %s to exist", kind, name))
			waiting = true
		}
	})
	if err != nil {
		return fmt.Errorf("look up %s %s: %w", kind, name, err)
	}
	if waiting {
		r.log.Info(fmt.Sprintf("%s %s exists", kind, name))
	}
	return nil
}

// missing reports whether err says that a stream, bucket or object store does not exist.
func missing(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}
