package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/authgen"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
	"github.com/cairn-stream/cairn/services/coordinator"
)

// TestCheckpointRequestsUnderDeployedPermissions runs two coordinators and an operator
// as their users of the authorization `cairn auth` generates; the admin triggers
// checkpoints and savepoints, lists and deletes them, through both coordinators (the
// standby forwards to the lease holder), the operator stores an output (reading its
// output mark first), dead-letters a record whose output exceeds max_payload and,
// restarted, reads its dead letters to replay that record, and the server logs no
// permission violation.
func TestCheckpointRequestsUnderDeployedPermissions(t *testing.T) {
	a := startAuthServer(t, authgen.Spec{
		Jobs:         []authgen.Job{{Name: "perm", Instances: []string{"p-0"}}},
		Coordinators: []authgen.Member{{Name: "c1"}, {Name: "c2"}},
	})
	s := a.system(cairnjs.Options{Memory: true, LeaseTTL: leaseTTL})
	admin, ajs := s.nc, s.js
	ctx := context.Background()
	s.startCoordinator("c1")
	s.startCoordinator("c2")
	s.startOperatorWith("perm", "p-0", func(c *aggregator.Config) { c.Output = subjects.Output("perm", "p-0") })

	call := func(subject, body string, v any) {
		t.Helper()
		// A 503 (no coordinator holds the lease right now, or it is busy) did nothing: ask
		// again.
		var m *nats.Msg
		natstest.Eventually(t, 20*time.Second, subject+" answered 503", func() bool {
			m = natstest.Request(t, admin, subject, []byte(body), 10*time.Second)
			return m.Header.Get("Nats-Service-Error-Code") != "503"
		})
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
			t.Fatalf("%s %s: %s %s", subject, body, code, m.Data)
		}
		if err := json.Unmarshal(m.Data, v); err != nil {
			t.Fatalf("%s: reply %q: %v", subject, m.Data, err)
		}
	}
	natstest.Eventually(t, 10*time.Second, "a coordinator holds the lease of job perm with p-0 registered", func() bool {
		m := natstest.Request(t, admin, subjects.Status("perm"), nil, 10*time.Second)
		var st messages.Status
		return json.Unmarshal(m.Data, &st) == nil && st.Holder != "" && len(st.Instances) == 1
	})
	// Trigger, take a savepoint, list and delete it until each coordinator has received
	// every kind of request at least once: micro's queue group picks one at random, and a
	// standby forwards triggers and deletions to the lease holder.
	for i := 0; !servedAll(t, admin, 2, "checkpoint-trigger", "checkpoint-list", "checkpoint-delete"); i++ {
		if i == 40 {
			t.Fatal("after 40 rounds of requests a coordinator still received none of one kind")
		}
		var r messages.CheckpointResult
		call(subjects.CheckpointTrigger("perm"), "", &r)
		if r.Outcome != "completed" {
			t.Fatalf("trigger: %+v", r)
		}
		name := fmt.Sprintf("s%d", i)
		call(subjects.CheckpointTrigger("perm"), fmt.Sprintf(`{"savepoint":%q}`, name), &r)
		var l messages.CheckpointList
		call(subjects.CheckpointList("perm"), "", &l)
		if len(l.Savepoints) != 1 || l.Savepoints[0].Savepoint != name || l.Savepoints[0].ID != r.ID {
			t.Fatalf("savepoints %+v, want %s (checkpoint %d)", l.Savepoints, name, r.ID)
		}
		var d messages.SavepointDeleted
		call(subjects.CheckpointDelete("perm"), fmt.Sprintf(`{"savepoint":%q}`, name), &d)
		if d.ID != r.ID {
			t.Fatalf("delete %s: %+v, want checkpoint %d", name, d, r.ID)
		}
	}
	// An input event: the operator reads its output subject's last message (the output
	// mark) and stores the output.
	if _, err := ajs.Publish(ctx, subjects.Input("perm", "p-0"), []byte(`{"key":"a","value":1}`)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "the operator's output was not stored", func() bool {
		st, err := ajs.Stream(ctx, cairnjs.OutputStream)
		return err == nil && st.CachedInfo().State.Msgs == 1
	})
	// An event whose output exceeds max_payload: dead-lettered on the instance's subject.
	big := fmt.Appendf(nil, `{"key":%q,"value":1}`, strings.Repeat("k", int(admin.MaxPayload())-40))
	if _, err := ajs.Publish(ctx, subjects.Input("perm", "p-0"), big); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "the record was not dead-lettered", func() bool {
		st, err := ajs.Stream(ctx, cairnjs.DeadLetterStream)
		return err == nil && st.CachedInfo().State.Msgs == 1
	})
	// Restarted from a checkpoint before it, the operator reads its dead letters.
	s.stop("p-0")
	s.startOperatorWith("perm", "p-0", func(c *aggregator.Config) { c.Output = subjects.Output("perm", "p-0") })
	natstest.Eventually(t, 20*time.Second, "the restarted operator did not replay the dead-lettered record", func() bool {
		var info messages.OperatorInfo
		_, err := natstest.RequestJSON(ctx, admin, subjects.OperatorInfo("perm", "p-0"), nil, &info)
		return err == nil && info.Stats.DeadLettersReplayed == 1
	})
	a.noViolations()
}

// servedAll reports whether each of the n coordinators has received at least one request
// on every endpoint, by micro's stats.
func servedAll(t *testing.T, nc *nats.Conn, n int, endpoints ...string) bool {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$SRV.STATS."+coordinator.ServiceName, inbox, nil); err != nil {
		t.Fatal(err)
	}
	for range n {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("stats of %s: %d replies, want %d: %v", coordinator.ServiceName, n, n, err)
		}
		var st micro.Stats
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatalf("stats %q: %v", m.Data, err)
		}
		for _, name := range endpoints {
			if !slices.ContainsFunc(st.Endpoints, func(e *micro.EndpointStats) bool { return e.Name == name && e.NumRequests > 0 }) {
				return false
			}
		}
	}
	return true
}
