package bench

import (
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// overdue is how long after a barrier the next one may be fired on demand: more than the
// minimum interval (100ms), so that this interval is already overdue when the coordinator
// applies it.
const overdue = 120 * time.Millisecond

// trigger fires checkpoints on demand through the public config API alone. The job runs
// on interval 24h, so the coordinator sends no barrier by itself. fire sets the minimum
// interval, 100ms, at a moment when it is overdue: by the scheduling rule the coordinator
// sends a barrier the moment it applies that version. postpone sets 24h again.
type trigger struct {
	c        *cluster
	barriers <-chan arrival[*messages.Barrier]
	// version is the config version of the last postpone: 24h.
	version   uint64
	notBefore time.Time
}

func newTrigger(c *cluster) *trigger {
	c.b.Helper()
	t := &trigger{c: c, barriers: follow[messages.Barrier](c, c.subjects.Barrier(job))}
	t.postpone()
	t.notBefore = time.Now().Add(overdue)
	return t
}

// quiet waits until the coordinator runs on the 24h version and no checkpoint is pending,
// and returns that status.
func (t *trigger) quiet() messages.Status {
	t.c.b.Helper()
	return t.c.waitStatus("no checkpoint pending on interval 24h", func(st messages.Status) bool {
		return st.Config.Version == t.version && len(st.Pending) == 0
	})
}

// due returns once interval 100ms is overdue, so that fire triggers at once.
func (t *trigger) due() { waitUntil(t.notBefore) }

// fire sets interval 100ms, once it is overdue, and returns when the set request was sent,
// when its reply came, the version it created and the first barrier under that version.
func (t *trigger) fire() (sent, replied time.Time, version uint64, br arrival[*messages.Barrier]) {
	t.c.b.Helper()
	t.due()
	sent = time.Now()
	version = t.c.set(`{"interval":"100ms"}`).Version
	replied = time.Now()
	br = next(t.c.b, t.barriers, "barrier under the 100ms config", func(a arrival[*messages.Barrier]) bool {
		return a.msg.ConfigVersion >= version
	})
	if br.msg.ConfigVersion != version {
		t.c.b.Fatalf("barrier %d runs under config version %d; want %d", br.msg.CheckpointID, br.msg.ConfigVersion, version)
	}
	t.notBefore = br.at.Add(overdue)
	return sent, replied, version, br
}

// postpone sets interval 24h.
func (t *trigger) postpone() {
	t.c.b.Helper()
	t.version = t.c.set(`{"interval":"24h"}`).Version
}
