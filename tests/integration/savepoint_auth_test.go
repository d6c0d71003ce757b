package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator"
	"github.com/cairn-stream/cairn/services/operator"
)

// TestCheckpointRequestsUnderDeployedPermissions runs two coordinators and an operator
// as the users of deploy/nats/auth.conf; the admin triggers checkpoints and savepoints,
// lists and deletes them, through both coordinators (the standby forwards to the lease
// holder), the operator stores an output (reading its output mark first), dead-letters a
// record whose output exceeds max_payload and, restarted, reads its dead letters to
// replay that record, and the server logs no permission violation.
func TestCheckpointRequestsUnderDeployedPermissions(t *testing.T) {
	auth, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"ADMIN", "CONFIGSVC", "COORDINATOR", "OPERATOR", "LOADGEN"} {
		t.Setenv("CAIRN_"+u+"_PASSWORD", strings.ToLower(u))
	}
	var log natstest.LogBuffer
	srv := natstest.StartConfig(t, string(auth), &log)
	connect := func(user string) *nats.Conn {
		nc, err := nats.Connect(srv.URL, nats.UserInfo(user, user))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	admin := connect("admin")
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
	defer ecancel()
	if _, err := cjs.Ensure(ectx, ajs, cjs.Options{Memory: true, LeaseTTL: leaseTTL}); err != nil {
		t.Fatal(err)
	}

	var done []chan error
	run := func(name string, f func(ctx context.Context) error) {
		ch := make(chan error, 1)
		done = append(done, ch)
		go func() { ch <- f(ctx) }()
	}
	for _, id := range []string{"c1", "c2"} {
		nc := connect("coordinator")
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		res, err := cjs.Ensure(ectx, js, cjs.Options{LookupOnly: true})
		if err != nil {
			t.Fatalf("coordinator %s: resources: %v", id, err)
		}
		cfg := coordinator.DefaultConfig()
		cfg.ID = id
		svc, err := coordinator.New(cfg, nc, js, res, testLog().With().Str("service", id).Logger())
		if err != nil {
			t.Fatal(err)
		}
		run(id, svc.Run)
	}
	opc := operator.DefaultConfig("perm", "p-0")
	opc.Output = subjects.Output("perm", "p-0")
	op, err := operator.NewService(opc, connect("operator"), testLog().With().Str("service", "p-0").Logger())
	if err != nil {
		t.Fatal(err)
	}
	opCtx, stopOp := context.WithCancel(ctx)
	opDone := make(chan error, 1)
	go func() { opDone <- op.Run(opCtx) }()
	defer func() {
		cancel()
		stopOp()
		for _, ch := range done {
			if err := <-ch; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()

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
		st, err := ajs.Stream(ctx, cjs.OutputStream)
		return err == nil && st.CachedInfo().State.Msgs == 1
	})
	// An event whose output exceeds max_payload: dead-lettered on the instance's subject.
	big := fmt.Appendf(nil, `{"key":%q,"value":1}`, strings.Repeat("k", int(admin.MaxPayload())-40))
	if _, err := ajs.Publish(ctx, subjects.Input("perm", "p-0"), big); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "the record was not dead-lettered", func() bool {
		st, err := ajs.Stream(ctx, cjs.DeadLetterStream)
		return err == nil && st.CachedInfo().State.Msgs == 1
	})
	// Restarted from a checkpoint before it, the operator reads its dead letters.
	stopOp()
	if err := <-opDone; err != nil {
		t.Fatalf("operator: %v", err)
	}
	op, err = operator.NewService(opc, connect("operator"), testLog().With().Str("service", "p-0").Logger())
	if err != nil {
		t.Fatal(err)
	}
	run("p-0 again", op.Run)
	natstest.Eventually(t, 20*time.Second, "the restarted operator did not replay the dead-lettered record", func() bool {
		return op.Runtime().Stats().DeadLettersReplayed == 1
	})
	if strings.Contains(log.String(), "Permissions Violation") {
		t.Fatalf("permission violations:\n%s", log.String())
	}
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
