package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// publishConfig publishes config version v of job with interval on the events subject
// and, with head, its head after it, as configsvc does.
func (c *cluster) publishConfig(job string, v uint64, interval time.Duration, head bool) {
	c.t.Helper()
	cfg := messages.DefaultConfig()
	cfg.Interval = interval
	data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job, Version: v, Config: cfg, Time: time.Now().UTC()})
	if err != nil {
		c.t.Fatal(err)
	}
	subjects := []string{cairnjs.Subjects{}.ConfigEvents(job)}
	if head {
		subjects = append(subjects, cairnjs.Subjects{}.ConfigHead(job))
	}
	for _, subject := range subjects {
		if _, err := c.js.Publish(c.t.Context(), subject, data); err != nil {
			c.t.Fatal(err)
		}
	}
}

// garbage publishes n invalid messages on job's events subject.
func (c *cluster) garbage(job string, n int) {
	c.t.Helper()
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, "garbage %d", i)
	}
	if _, err := natstest.Publish(c.t.Context(), c.js, cairnjs.Subjects{}.ConfigEvents(job), payloads); err != nil {
		c.t.Fatal(err)
	}
}

// waitConfig waits until job's status shows version v with interval, and returns it.
func (c *cluster) waitConfig(job string, v uint64, interval string) messages.Status {
	c.t.Helper()
	var st messages.Status
	natstest.Eventually(c.t, 10*time.Second, fmt.Sprintf("%s at version %d (%s)", job, v, interval), func() bool {
		var code string
		st, code = c.status(job)
		return code == "" && st.Config.Version == v && st.EffectiveInterval == interval
	})
	return st
}

// The coordinator follows config heads besides events: a head is not an event (a copy of
// an applied one is not counted as stale), garbage on the events subject changes nothing,
// and a coordinator started after garbage pushed every valid event out of the stream runs
// the head's version, with or without a job list.
func TestCoordinatorFollowsConfigHeads(t *testing.T) {
	c := newCluster(t, cairnjs.DefaultLeaseTTL)
	const job = "headed"
	for v := uint64(1); v <= 3; v++ {
		c.publishConfig(job, v, time.Duration(10+v)*time.Second, true)
	}
	c.simulate(job, "op-0")
	c.start("c1")
	if st := c.waitConfig(job, 3, "13s"); st.StaleConfigEvents != 0 {
		t.Fatalf("%d stale config events after reading the last event and its head, want 0", st.StaleConfigEvents)
	}

	// As many invalid messages as the stream keeps per subject push every event out.
	c.garbage(job, 10001)
	c.publishConfig(job, 4, 14*time.Second, true)
	if st := c.waitConfig(job, 4, "14s"); st.StaleConfigEvents != 0 {
		t.Fatalf("%d stale config events, want 0", st.StaleConfigEvents)
	}
	c.garbage(job, 10001)
	c.stop("c1")

	for _, tc := range []struct {
		id   string
		jobs []string
	}{{"every-job", nil}, {"job-list", []string{job}}} {
		c.start(tc.id, tc.jobs...)
		c.waitConfig(job, 4, "14s")
		c.stop(tc.id)
	}

	// configsvc stopped between an event and its head: the event is in force.
	c.start("c2")
	c.waitConfig(job, 4, "14s")
	c.publishConfig(job, 5, 15*time.Second, false)
	if st := c.waitConfig(job, 5, "15s"); st.StaleConfigEvents != 0 {
		t.Fatalf("%d stale config events, want 0", st.StaleConfigEvents)
	}
	// A replayed old event is still stale, as before heads.
	c.publishConfig(job, 2, time.Second, false)
	c.publishConfig(job, 6, 16*time.Second, true)
	if st := c.waitConfig(job, 6, "16s"); st.StaleConfigEvents != 1 {
		t.Fatalf("%d stale config events, want 1 (the replayed version 2)", st.StaleConfigEvents)
	}
}
