package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator"
	"github.com/cairn-stream/cairn/services/operator"
)

// TestCheckpointRequestsUnderDeployedPermissions runs two coordinators and an operator
// as the users of deploy/nats/auth.conf; the admin triggers checkpoints and a savepoint,
// lists and deletes it, through whichever coordinator micro picks (a standby forwards to
// the lease holder), and the server logs no permission violation.
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
	op, err := operator.NewService(opc, connect("operator"), testLog().With().Str("service", "p-0").Logger())
	if err != nil {
		t.Fatal(err)
	}
	run("p-0", op.Run)
	defer func() {
		cancel()
		for _, ch := range done {
			if err := <-ch; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()

	call := func(subject, body string, v any) {
		t.Helper()
		m := natstest.Request(t, admin, subject, []byte(body), 10*time.Second)
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
	// Enough requests that both coordinators receive some: micro's queue group picks one
	// at random each time.
	for range 10 {
		var r messages.CheckpointResult
		call(subjects.CheckpointTrigger("perm"), "", &r)
		if r.Outcome != "completed" {
			t.Fatalf("trigger: %+v", r)
		}
	}
	var r messages.CheckpointResult
	call(subjects.CheckpointTrigger("perm"), `{"savepoint":"s"}`, &r)
	var l messages.CheckpointList
	call(subjects.CheckpointList("perm"), "", &l)
	if len(l.Savepoints) != 1 || l.Savepoints[0].ID != r.ID {
		t.Fatalf("savepoints %+v, want s (checkpoint %d)", l.Savepoints, r.ID)
	}
	var d messages.SavepointDeleted
	call(subjects.CheckpointDelete("perm"), `{"savepoint":"s"}`, &d)
	if strings.Contains(log.String(), "Permissions Violation") {
		t.Fatalf("permission violations:\n%s", log.String())
	}
}
