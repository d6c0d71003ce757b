package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/configsvc"
)

// TestOnlyConfigsvcPublishesConfig runs configsvc as the configsvc user of
// deploy/nats/auth.conf: its sets write the events and heads, and its gets and history
// read them, with no permission violation. Every other user of the file is denied
// publishing on a job's events subject and on its head subject: the server logs each
// violation and the stream receives nothing.
func TestOnlyConfigsvcPublishesConfig(t *testing.T) {
	auth, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users := []string{"admin", "configsvc", "coordinator", "operator", "loadgen"}
	for _, u := range users {
		t.Setenv("CAIRN_"+strings.ToUpper(u)+"_PASSWORD", u)
	}
	var log natstest.LogBuffer
	srv := natstest.StartConfig(t, string(auth), &log)
	connect := func(user string) *nats.Conn {
		nc, err := nats.Connect(srv.URL, nats.UserInfo(user, user), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := connect("admin")
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cjs.Ensure(ctx, ajs, cjs.Options{Memory: true, Only: []string{cjs.ConfigStream}})
	if err != nil {
		t.Fatal(err)
	}

	nc := connect("configsvc")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, cjs.ConfigStream)
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
	// The server logs "Publish Violation - Subject ..." and "Subscription Violation - ...".
	if strings.Contains(log.String(), "Violation") {
		t.Fatalf("configsvc met permission violations:\n%s", log.String())
	}

	info, err := res.Config.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	denied := []string{subjects.ConfigEvents(job), subjects.ConfigHead(job)}
	others := []string{"admin", "coordinator", "operator", "loadgen"}
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
			violation := `user:` + u + `" - Publish Violation - Subject "` + subject + `"`
			natstest.Eventually(t, 10*time.Second, violation+" logged", func() bool {
				return strings.Contains(log.String(), violation)
			})
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
