package loop

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// fakeBackend records what a job loop does, for tests on synctest's fake clock.
type fakeBackend struct {
	mu        sync.Mutex
	last      uint64
	barriers  []sentBarrier
	manifests []*messages.Manifest
	events    []*messages.CheckpointEvent
	latest    *messages.Manifest
	failWrite error
	failRead  error
	retains   int
	// retained is the last retention request.
	retained RetainRequest
	// memberEvents are the member audit events published.
	memberEvents []*messages.MemberEvent
	// alarms are the alarm events published.
	alarms []*messages.AlarmEvent
	// savepointsByName are the savepoints written and not deleted.
	savepointsByName map[string]*messages.Manifest
	// members are the instance records' memberships: instance → checkpoint.
	members map[string]uint64
	// slow, when set, is called (without the lock) at the start of NextID, LatestManifest
	// and WriteManifest with the call's context and name: a slow or hanging store.
	slow func(ctx context.Context, op string)
}

// delay runs the slow hook, if any.
func (f *fakeBackend) delay(ctx context.Context, op string) {
	f.mu.Lock()
	slow := f.slow
	f.mu.Unlock()
	if slow != nil {
		slow(ctx, op)
	}
}

type sentBarrier struct {
	at time.Time
	b  *messages.Barrier
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) NextID(ctx context.Context) (uint64, error) {
	f.delay(ctx, "nextID")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last++
	return f.last, nil
}

func (f *fakeBackend) SendBarrier(b *messages.Barrier) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.barriers = append(f.barriers, sentBarrier{at: time.Now(), b: b})
	return nil
}

func (f *fakeBackend) WriteManifest(ctx context.Context, m *messages.Manifest, prev uint64) error {
	f.delay(ctx, "writeManifest")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWrite != nil {
		return f.failWrite
	}
	if (f.latest == nil && prev != 0) || (f.latest != nil && f.latest.CheckpointID != prev) {
		return ErrFenced
	}
	f.manifests = append(f.manifests, m)
	f.latest = m
	return nil
}

func (f *fakeBackend) LatestManifest(ctx context.Context) (*messages.Manifest, error) {
	f.delay(ctx, "latestManifest")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRead != nil {
		return nil, f.failRead
	}
	return f.latest, nil
}

func (f *fakeBackend) MarkMember(_ context.Context, instance, _ string, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.members == nil {
		f.members = map[string]uint64{}
	}
	if f.members[instance] == 0 {
		f.members[instance] = id
	}
	return nil
}

func (f *fakeBackend) ClearMember(_ context.Context, instance string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.members, instance)
	return nil
}

func (f *fakeBackend) PublishMemberEvent(_ context.Context, e *messages.MemberEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.memberEvents = append(f.memberEvents, e)
	return nil
}

func (f *fakeBackend) PublishAlarm(_ context.Context, e *messages.AlarmEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.alarms = append(f.alarms, e)
	return nil
}

func (f *fakeBackend) Unfinished(_ context.Context, completed uint64) ([]uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uint64
	for id := completed + 1; id <= f.last; id++ {
		ids = append(ids, id)
	}
	return ids, f.last, nil
}

func (f *fakeBackend) PublishEvent(_ context.Context, e *messages.CheckpointEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
	return nil
}

func (f *fakeBackend) Retain(req RetainRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retains++
	f.retained = req
}

func (f *fakeBackend) Savepoints(context.Context) (map[string]*messages.Manifest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.savepointsByName), nil
}

func (f *fakeBackend) WriteSavepoint(_ context.Context, m *messages.Manifest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.savepointsByName[m.Savepoint]; ok {
		return ErrSavepointExists
	}
	if f.savepointsByName == nil {
		f.savepointsByName = map[string]*messages.Manifest{}
	}
	f.savepointsByName[m.Savepoint] = m
	return nil
}

func (f *fakeBackend) DeleteSavepoint(_ context.Context, name string) (*messages.Manifest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.savepointsByName[name]
	delete(f.savepointsByName, name)
	return m, nil
}

func (f *fakeBackend) sent() []sentBarrier {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sentBarrier(nil), f.barriers...)
}

func (f *fakeBackend) eventsOf(o messages.Outcome) []*messages.CheckpointEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*messages.CheckpointEvent
	for _, e := range f.events {
		if e.Outcome == o {
			out = append(out, e)
		}
	}
	return out
}

var errDisk = errors.New("disk full")
