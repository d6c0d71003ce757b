package reply_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestError: the code and the description, on one line, in micro's error headers, and the
// whole description in the JSON body.
func TestError(t *testing.T) {
	nc := natstest.Start(t).Connect(t)
	svc, err := micro.AddService(nc, micro.Config{Name: "reply-test", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	const description = "instance i-0 cannot answer:\nstate not restored"
	err = svc.AddEndpoint("fail", micro.HandlerFunc(func(req micro.Request) {
		if err := reply.Error(req, "503", description); err != nil {
			t.Errorf("Error = %v", err)
		}
	}), micro.WithEndpointSubject("reply.test.fail"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request("reply.test.fail", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(micro.ErrorCodeHeader); got != "503" {
		t.Errorf("code header %q, want 503", got)
	}
	if got, want := msg.Header.Get(micro.ErrorHeader), "instance i-0 cannot answer: state not restored"; got != want {
		t.Errorf("error header %q, want %q", got, want)
	}
	var body messages.ErrorBody
	if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error != description {
		t.Errorf("body %q (%v), want {\"error\": %q}", msg.Data, err, description)
	}
}

// TestMsg: Msg carries what Error answers with, on the given subject.
func TestMsg(t *testing.T) {
	const description = "no coordinator holds the lease\r\nof job j"
	m := reply.Msg("_INBOX.x", "503", description)
	if m.Subject != "_INBOX.x" || m.Header.Get(micro.ErrorCodeHeader) != "503" {
		t.Errorf("subject %q, code %q; want _INBOX.x and 503", m.Subject, m.Header.Get(micro.ErrorCodeHeader))
	}
	if got, want := m.Header.Get(micro.ErrorHeader), "no coordinator holds the lease  of job j"; got != want {
		t.Errorf("error header %q, want %q", got, want)
	}
	var body messages.ErrorBody
	if err := json.Unmarshal(m.Data, &body); err != nil || body.Error != description {
		t.Errorf("body %q (%v), want {\"error\": %q}", m.Data, err, description)
	}
}
