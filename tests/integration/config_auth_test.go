package integration

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/authgen"
	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/configsvc"
)

// TestOnlyConfigsvcPublishesConfig runs configsvc as its user of the authorization `cairn
// auth` generates: its sets write the events and heads, and its gets and history read
// them, with no permission violation. Every other user is denied publishing on a job's
// events subject and on its head subject: the server logs each violation and the stream
// receives nothing.
func TestOnlyConfigsvcPublishesConfig(t *testing.T) {
	a := startAuthServer(t, authgen.Spec{
		Jobs:     []authgen.Job{{Name: "guarded", Instances: []string{"g-0"}}},
		Loadgens: []authgen.Member{{Name: "feed"}},
	})
	connect := func(user string) *nats.Conn { return a.connect(user, nil) }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := connect("admin.admin")
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cairnjs.Ensure(ctx, ajs, cairnjs.Options{Memory: true, Only: []string{cairnjs.ConfigStream}})
	if err != nil {
		t.Fatal(err)
	}

	nc := connect("configsvc.configsvc")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, cairnjs.ConfigStream)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := configsvc.New(configsvc.DefaultConfig(), nc, js, stream, testLog())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("configsvc Run: %v", err)
		}
	}()

	const job = "guarded"
	var v messages.ConfigView
	for _, patch := range []string{`{"interval":"2s"}`, `{"retain":4}`} {
		if _, err := natstest.RequestJSON(ctx, admin, subjects.ConfigSet(job), []byte(patch), &v); err != nil {
			t.Fatalf("set %s: %v", patch, err)
		}
	}
	if _, err := natstest.RequestJSON(ctx, admin, subjects.ConfigGet(job), nil, &v); err != nil || v.Version != 2 {
		t.Fatalf("get = %+v, %v; want version 2", v, err)
	}
	var hist messages.ConfigHistory
	if _, err := natstest.RequestJSON(ctx, admin, subjects.ConfigHistory(job), nil, &hist); err != nil || len(hist.Versions) != 2 {
		t.Fatalf("history = %+v, %v; want versions 1 and 2", hist, err)
	}
	head, _, _, err := configlog.ReadHead(ctx, res.Config, subjects, job, 5*time.Second)
	if err != nil || head == nil || head.Version != 2 {
		t.Fatalf("head %+v (%v), want version 2", head, err)
	}
	a.noViolations()

	info, err := res.Config.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	denied := []string{subjects.ConfigEvents(job), subjects.ConfigHead(job)}
	others := []string{"admin.admin", "coord.coordinator", "op.guarded.g-0", "loadgen.feed"}
	for _, u := range others {
		c := connect(u)
		for _, subject := range denied {
			if err := c.Publish(subject, []byte("garbage")); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range others {
		for _, subject := range denied {
			a.waitViolation(u, `Publish Violation - Subject "`+subject+`"`)
		}
	}
	after, err := res.Config.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.LastSeq != info.State.LastSeq {
		t.Fatalf("CAIRN_CONFIG's last sequence moved from %d to %d", info.State.LastSeq, after.State.LastSeq)
	}
	if _, err := natstest.RequestJSON(ctx, admin, subjects.ConfigGet(job), nil, &v); err != nil || v.Version != 2 {
		t.Fatalf("get after the denied publishes = %+v, %v; want version 2", v, err)
	}
}
