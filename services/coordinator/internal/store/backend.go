package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// corePublisher sends core NATS messages (barriers).
type corePublisher interface {
	PublishMsg(m *nats.Msg) error
}

// streamPublisher publishes to JetStream and waits for the ack (checkpoint events).
type streamPublisher interface {
	PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// asyncPublisher publishes to JetStream without waiting for the ack (completed events).
type asyncPublisher interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// lastMsgReader reads a subject's last message in a stream (CAIRN_CHECKPOINTS).
type lastMsgReader interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

// Backend is one job's backend on NATS: the id counter and manifests in KV
// CAIRN_MANIFESTS, barriers on core NATS, checkpoint events on CAIRN_CHECKPOINTS, and a
// retention worker. Its fields are used by the job's loop goroutine only, except retention,
// which has its own goroutine fed through retainCh.
type Backend struct {
	job       string
	subjects  cairnjs.Subjects
	nc        corePublisher
	js        streamPublisher
	async     asyncPublisher
	manifests jetstream.KeyValue
	// instances is CAIRN_INSTANCES, written with compare-and-set on reads from leader.
	instances cairnjs.KVWriter
	// leader answers the reads of the id counter and <job>.latest, which go to the bucket
	// stream's leader (cairnjs.CurrentEntry): a KV Get may be answered by a replica that lags
	// (one that was paused or cut off answers with what it had), and a stale counter or
	// predecessor makes every compare-and-set after it fail.
	leader cairnjs.Requester
	events lastMsgReader
	log    zerolog.Logger
	// stores are the job's snapshot stores; the job's own is created before the first id
	// is issued (storeOK once it exists).
	stores  Stores
	storeOK bool

	counter    uint64 // last id issued, valid while counterOK
	counterRev uint64
	counterOK  bool
	latestRev  uint64
	latestOK   bool
	// used is the highest checkpoint id known to be taken: the newest manifest's, the
	// newest ended checkpoint's and every id this backend issued. NextID never returns an
	// id at or below it, even when the counter key was lost.
	used uint64
	// relist is set when the job's keys may have changed in a way that the manifests
	// handed to retention do not show (the loop read <job>.latest again, or wrote or
	// deleted a savepoint): the next retention pass lists them.
	relist bool

	retainCh chan loop.RetainRequest
}

var _ loop.Backend = (*Backend)(nil)

// BackendConfig is what NewBackend needs: the job, its subjects and the NATS resources.
type BackendConfig struct {
	// Job is the job's name.
	Job string
	// Subjects gives the subject prefix.
	Subjects cairnjs.Subjects
	// Conn sends barriers and answers reads from bucket leaders.
	Conn *nats.Conn
	// JS publishes the events whose acks are awaited, Async those whose are not
	// (completed events).
	JS, Async jetstream.JetStream
	// Resources are the buckets and streams: CAIRN_MANIFESTS, CAIRN_INSTANCES and
	// CAIRN_CHECKPOINTS are used.
	Resources *cairnjs.Resources
	// Log receives the backend's and its retention worker's lines.
	Log zerolog.Logger
}

// NewBackend returns the backend of one job. SetStores must give it the job's snapshot
// stores before its loop or retention worker runs.
func NewBackend(c BackendConfig) *Backend {
	return &Backend{
		job: c.Job, subjects: c.Subjects, nc: c.Conn, js: c.JS, async: c.Async, manifests: c.Resources.Manifests,
		instances: c.Resources.Instances, leader: c.Conn, events: c.Resources.Checkpoints, log: c.Log,
		retainCh: make(chan loop.RetainRequest, 1),
	}
}

// SetStores gives the backend the job's snapshot stores; call it before the job's loop and
// retention worker start.
func (b *Backend) SetStores(s Stores) { b.stores = s }

// ReadLatest returns job's manifest under <job>.latest in bucket kv and its revision (nil,
// 0 when none), read from the bucket stream's leader.
func ReadLatest(ctx context.Context, leader cairnjs.Requester, kv jetstream.KeyValue, job string) (*messages.Manifest, uint64, error) {
	return (&Backend{job: job, manifests: kv, leader: leader}).readLatest(ctx)
}

// NextID implements loop.Backend: compare-and-set on <job>.counter in CAIRN_MANIFESTS,
// after the job's snapshot store exists.
func (b *Backend) NextID(ctx context.Context) (uint64, error) {
	if !b.storeOK {
		// Operators upload into the job's store as soon as a barrier arrives.
		if _, err := b.stores.Open(ctx, b.stores.Own()); err != nil {
			return 0, fmt.Errorf("create the job's snapshot store %s: %w", b.stores.Own(), err)
		}
		b.storeOK = true
	}
	key := cairnjs.CounterKey(b.job)
	for range 8 {
		if !b.counterOK {
			if err := b.readCounter(ctx, true); err != nil {
				return 0, err
			}
		}
		next := max(b.counter, b.used) + 1
		data, err := messages.Marshal(&messages.Counter{Schema: messages.SchemaVersion, Job: b.job, Last: next})
		if err != nil {
			return 0, err
		}
		if err := expired(ctx); err != nil {
			return 0, fmt.Errorf("advance checkpoint id counter: %w", err)
		}
		rev, err := cairnjs.CompareAndSet(ctx, b.manifests, key, data, b.counterRev)
		if err == nil {
			b.counter, b.counterRev, b.used = next, rev, next
			return next, nil
		}
		b.counterOK = false
		if !cairnjs.IsConflict(err) {
			return 0, fmt.Errorf("advance checkpoint id counter: %w", err)
		}
	}
	return 0, fmt.Errorf("advance checkpoint id counter: %w", loop.ErrFenced)
}

// readCounter re-reads the id counter from the bucket stream's leader and, with latest,
// the newest manifest's id: a counter that was lost is then advanced past every id
// already used instead of starting again at 1. Whatever it reads, NextID advances the
// counter only with compare-and-set on the revision read, so no id is issued twice.
func (b *Backend) readCounter(ctx context.Context, latest bool) error {
	key := cairnjs.CounterKey(b.job)
	value, rev, err := cairnjs.CurrentEntry(ctx, b.leader, b.manifests.Bucket(), key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		b.counter, b.counterRev = 0, 0
	case err != nil:
		return fmt.Errorf("read checkpoint id counter: %w", err)
	default:
		var c messages.Counter
		if err := messages.Unmarshal(value, &c); err != nil {
			// As good as lost: overwrite it (compare-and-set on its revision) with an id
			// above every one used, rather than never issue an id again.
			b.log.Error().Err(err).Str("key", key).Msg("checkpoint id counter cannot be read; replacing it")
			c.Last = 0
		}
		b.counter, b.counterRev = c.Last, rev
	}
	if latest {
		m, _, err := b.readLatest(ctx)
		if err != nil {
			return err
		}
		if m != nil {
			b.used = max(b.used, m.CheckpointID)
		}
	}
	if b.counter < b.used {
		b.log.Error().Str("key", key).Uint64("counter", b.counter).Bool("missing", b.counterRev == 0).Uint64("highest_used", b.used).
			Msg("checkpoint id counter lost or behind the ids already used; continuing above them")
	}
	b.counterOK = true
	return nil
}

// SendBarrier implements loop.Backend: a core NATS message on the job's barrier subject.
func (b *Backend) SendBarrier(br *messages.Barrier) error {
	data, err := messages.Marshal(br)
	if err != nil {
		return err
	}
	m := nats.NewMsg(b.subjects.Barrier(b.job))
	m.Data = data
	m.Header.Set(messages.HeaderCheckpointID, strconv.FormatUint(br.CheckpointID, 10))
	m.Header.Set(messages.HeaderConfigVersion, strconv.FormatUint(br.ConfigVersion, 10))
	return b.nc.PublishMsg(m)
}

// WriteManifest implements loop.Backend: a put of <job>.<id>, then compare-and-set of
// <job>.latest on the revision last read.
func (b *Backend) WriteManifest(ctx context.Context, m *messages.Manifest, prev uint64) error {
	data, err := messages.Marshal(m)
	if err != nil {
		return err
	}
	if err := expired(ctx); err != nil {
		return fmt.Errorf("put manifest: %w", err)
	}
	if _, err := b.manifests.Put(ctx, cairnjs.ManifestKey(b.job, m.CheckpointID), data); err != nil {
		return fmt.Errorf("put manifest: %w", err)
	}
	key := cairnjs.LatestKey(b.job)
	for range 4 {
		if !b.latestOK {
			cur, rev, err := b.readLatest(ctx)
			if err != nil {
				return err
			}
			var curID uint64
			if cur != nil {
				curID = cur.CheckpointID
			}
			if cur == nil && prev != 0 {
				return fmt.Errorf("%w: %s is gone, and it held checkpoint %d, the predecessor of checkpoint %d", loop.ErrManifestsLost, key, prev, m.CheckpointID)
			}
			if curID != prev {
				return fmt.Errorf("%w: %s holds checkpoint %d, not the predecessor %d of checkpoint %d", loop.ErrFenced, key, curID, prev, m.CheckpointID)
			}
			if cur != nil && m.Token != 0 && cur.Token > m.Token {
				return fmt.Errorf("%w: %s was written under fencing token %d, above this coordinator's %d", loop.ErrFenced, key, cur.Token, m.Token)
			}
			b.latestRev, b.latestOK = rev, true
		}
		// The last look at the lease before <job>.latest moves.
		if err := expired(ctx); err != nil {
			return fmt.Errorf("move %s: %w", key, err)
		}
		rev, err := cairnjs.CompareAndSet(ctx, b.manifests, key, data, b.latestRev)
		if err == nil {
			b.latestRev, b.used = rev, max(b.used, m.CheckpointID)
			return nil
		}
		b.latestOK = false
		if !cairnjs.IsConflict(err) {
			return fmt.Errorf("move %s: %w", key, err)
		}
	}
	return fmt.Errorf("move %s: %w", key, loop.ErrFenced)
}

// readLatest returns the manifest under <job>.latest and its revision (nil, 0 when none),
// read from the bucket stream's leader.
func (b *Backend) readLatest(ctx context.Context) (*messages.Manifest, uint64, error) {
	return readManifestKey(ctx, b.leader, b.manifests, cairnjs.LatestKey(b.job))
}

// LatestManifest implements loop.Backend; without <job>.latest, the last completed event
// tells a new job from lost manifests.
func (b *Backend) LatestManifest(ctx context.Context) (*messages.Manifest, error) {
	m, rev, err := b.readLatest(ctx)
	if err != nil {
		return nil, err
	}
	b.latestRev, b.latestOK, b.relist = rev, true, true
	if m != nil {
		b.used = max(b.used, m.CheckpointID)
		return m, nil
	}
	subject := b.subjects.CheckpointEvent(b.job, messages.Completed.String())
	raw, err := b.events.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read the last completed event to tell a new job from lost manifests: %w", err)
	}
	var ev messages.CheckpointEvent
	if messages.Unmarshal(raw.Data, &ev) != nil {
		return nil, nil
	}
	return nil, fmt.Errorf("%w: %s holds no manifest, yet checkpoint %d completed at %s (%s)",
		loop.ErrManifestsLost, cairnjs.LatestKey(b.job), ev.CheckpointID, ev.FinishedAt.Format(time.RFC3339), subject)
}

// MarkMember implements loop.Backend on the instance record in CAIRN_INSTANCES.
func (b *Backend) MarkMember(ctx context.Context, instance, incarnation string, id uint64) error {
	_, err := cairnjs.UpdateKey(ctx, b.leader, b.instances, cairnjs.InstanceKey(b.job, instance), func(cur []byte) ([]byte, error) {
		rec := messages.InstanceRecord{Schema: messages.SchemaVersion, Job: b.job, Instance: instance, Incarnation: incarnation}
		if cur != nil {
			if err := messages.Unmarshal(cur, &rec); err != nil {
				return nil, fmt.Errorf("instance record %s: %w", instance, err)
			}
		}
		if rec.Member != 0 {
			return nil, cairnjs.ErrNoChange
		}
		rec.Member = id
		return messages.Marshal(&rec)
	})
	return err
}

// ClearMember implements loop.Backend on the instance record in CAIRN_INSTANCES.
func (b *Backend) ClearMember(ctx context.Context, instance string) error {
	_, err := cairnjs.UpdateKey(ctx, b.leader, b.instances, cairnjs.InstanceKey(b.job, instance), func(cur []byte) ([]byte, error) {
		var rec messages.InstanceRecord
		if cur == nil {
			return nil, cairnjs.ErrNoChange
		}
		if err := messages.Unmarshal(cur, &rec); err != nil {
			return nil, fmt.Errorf("instance record %s: %w", instance, err)
		}
		if rec.Member == 0 {
			return nil, cairnjs.ErrNoChange
		}
		rec.Member = 0
		return messages.Marshal(&rec)
	})
	return err
}

// PublishEvent implements loop.Backend on CAIRN_CHECKPOINTS, deduplicated by job, id and
// outcome.
func (b *Backend) PublishEvent(ctx context.Context, e *messages.CheckpointEvent) error {
	data, err := messages.Marshal(e)
	if err != nil {
		return err
	}
	m := nats.NewMsg(b.subjects.CheckpointEvent(b.job, e.Outcome.String()))
	m.Data = data
	m.Header.Set(messages.HeaderCheckpointID, strconv.FormatUint(e.CheckpointID, 10))
	m.Header.Set(messages.HeaderConfigVersion, strconv.FormatUint(e.ConfigVersion, 10))
	id := jetstream.WithMsgID(fmt.Sprintf("%s.%d.%s", b.job, e.CheckpointID, e.Outcome))
	if e.Outcome == messages.Completed {
		// Nothing waits for a completed event (the manifest is the record): its ack is
		// not awaited, and a failure is logged when it comes (Async's error handler).
		_, err = b.async.PublishMsgAsync(m, id)
	} else {
		_, err = b.js.PublishMsg(ctx, m, id)
	}
	if err != nil {
		return fmt.Errorf("publish %s event: %w", e.Outcome, err)
	}
	return nil
}

// PublishMemberEvent implements loop.Backend, deduplicated by job, instance, kind and
// checkpoint.
func (b *Backend) PublishMemberEvent(ctx context.Context, e *messages.MemberEvent) error {
	id := fmt.Sprintf("%s.%s.%s.%d", b.job, e.Instance, e.Kind, e.Checkpoint)
	if err := b.publishStored(ctx, b.subjects.MemberEvents(b.job), id, e); err != nil {
		return fmt.Errorf("publish member %s event: %w", e.Kind, err)
	}
	return nil
}

// PublishAlarm implements loop.Backend, deduplicated by job, kind, state and checkpoint.
func (b *Backend) PublishAlarm(ctx context.Context, e *messages.AlarmEvent) error {
	id := fmt.Sprintf("%s.alarm.%s.%s.%d", b.job, e.Kind, e.State, e.Checkpoint)
	if err := b.publishStored(ctx, b.subjects.Alarms(b.job), id, e); err != nil {
		return fmt.Errorf("publish alarm %s %s event: %w", e.Kind, e.State, err)
	}
	return nil
}

// publishStored publishes m on subject to JetStream, deduplicated by id, and waits for
// the ack.
func (b *Backend) publishStored(ctx context.Context, subject, id string, m messages.Message) error {
	data, err := messages.Marshal(m)
	if err != nil {
		return err
	}
	_, err = b.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(id))
	return err
}

// Unfinished implements loop.Backend from the id counter and the last completed and
// aborted events.
func (b *Backend) Unfinished(ctx context.Context, completed uint64) ([]uint64, uint64, error) {
	b.used = max(b.used, completed)
	if err := b.readCounter(ctx, false); err != nil {
		return nil, 0, err
	}
	last := b.counter
	ended := completed
	for _, o := range []messages.Outcome{messages.Completed, messages.Aborted} {
		raw, err := b.events.GetLastMsgForSubject(ctx, b.subjects.CheckpointEvent(b.job, o.String()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, last, fmt.Errorf("read the last %s event: %w", o, err)
		}
		var ev messages.CheckpointEvent
		if messages.Unmarshal(raw.Data, &ev) == nil {
			ended = max(ended, ev.CheckpointID)
		}
	}
	b.used = max(b.used, ended)
	var ids []uint64
	for id := max(ended, last-min(last, messages.MaxMaxConcurrent)) + 1; id <= last; id++ {
		ids = append(ids, id)
	}
	return ids, max(last, b.used), nil
}

// expired returns an error when ctx's deadline (the lease's validity for a job's calls)
// has passed, even if its timer has not fired yet: a backend checks it right before a
// write another coordinator must never see from a fenced holder.
func expired(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return ctx.Err()
}
