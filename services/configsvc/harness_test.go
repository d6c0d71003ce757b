package configsvc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/configsvc"
)

// harness is one embedded server with Cairn's resources and a client connection.
type harness struct {
	srv  *natstest.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	res  *cairnjs.Resources
	subj cairnjs.Subjects
}

func newHarness(t *testing.T, prefix string) *harness {
	t.Helper()
	return newHarnessWith(t, cairnjs.Options{Subjects: cairnjs.Subjects{Prefix: prefix}})
}

// newHarnessWith is newHarness with the resources made with opts (in memory).
func newHarnessWith(t *testing.T, opts cairnjs.Options) *harness {
	t.Helper()
	srv := natstest.Start(t)
	opts.Memory = true
	nc, js, res := srv.Resources(t, opts)
	return &harness{srv: srv, nc: nc, js: js, res: res, subj: opts.Subjects}
}

// startReplica runs a Service on its own connection until the test ends, and returns a
// function that stops it and returns Run's result.
func (h *harness) startReplica(t *testing.T, log zerolog.Logger) (stop func() error) {
	t.Helper()
	nc := h.srv.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	stream, err := js.Stream(ctx, cairnjs.ConfigStream)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	svc, err := configsvc.New(configsvc.Config{Subjects: h.subj}, nc, js, stream, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			stopRun()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return stop
}

// waitReplicas waits until n replicas of the service list all three endpoints; a replica
// answers INFO after its endpoints' subscriptions reached the server.
func (h *harness) waitReplicas(t *testing.T, n int) {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := h.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject, err := micro.ControlSubject(micro.InfoVerb, configsvc.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	natstest.Eventually(t, 10*time.Second, "service replicas did not come up", func() bool {
		if err := h.nc.PublishRequest(subject, inbox, nil); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := sub.NextMsg(50 * time.Millisecond)
			if err != nil {
				return len(ready) >= n
			}
			var info micro.Info
			if err := json.Unmarshal(m.Data, &info); err != nil {
				t.Fatalf("INFO reply %s: %v", m.Data, err)
			}
			if len(info.Endpoints) == 3 {
				ready[info.ID] = true
			}
		}
	})
}

// start runs one replica with logs discarded and waits for it.
func (h *harness) start(t *testing.T) {
	t.Helper()
	h.startReplica(t, zerolog.Nop())
	h.waitReplicas(t, 1)
}

// reply is a decoded answer of the service.
type reply struct {
	// code is the Nats-Service-Error-Code header; empty for success.
	code string
	// err is the error message of an error reply.
	err  string
	view messages.ConfigView
}

func (h *harness) request(t *testing.T, subject string, body []byte, hdr nats.Header) reply {
	t.Helper()
	r, err := h.send(subject, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is request for any goroutine: it returns what request would fail the test with.
func (h *harness) send(subject string, body []byte, hdr nats.Header) (reply, error) {
	resp, err := h.nc.RequestMsg(&nats.Msg{Subject: subject, Data: body, Header: hdr}, 10*time.Second)
	if err != nil {
		return reply{}, fmt.Errorf("request %s: %w", subject, err)
	}
	r := reply{code: resp.Header.Get(micro.ErrorCodeHeader)}
	dec := json.NewDecoder(bytes.NewReader(resp.Data))
	dec.DisallowUnknownFields()
	if r.code != "" {
		var eb messages.ErrorBody
		if err := dec.Decode(&eb); err != nil {
			return r, fmt.Errorf("error body %q: %w", resp.Data, err)
		}
		r.err = eb.Error
		if desc := resp.Header.Get(micro.ErrorHeader); desc != eb.Error {
			return r, fmt.Errorf("error header %q differs from body %q", desc, eb.Error)
		}
		return r, nil
	}
	if err := dec.Decode(&r.view); err != nil {
		return r, fmt.Errorf("reply %q: %w", resp.Data, err)
	}
	return r, nil
}

func (h *harness) set(t *testing.T, job, body string) reply {
	t.Helper()
	return h.request(t, h.subj.ConfigSet(job), []byte(body), nil)
}

func (h *harness) get(t *testing.T, job string) reply {
	t.Helper()
	return h.request(t, h.subj.ConfigGet(job), nil, nil)
}

// mustSet sets and fails the test on an error reply.
func (h *harness) mustSet(t *testing.T, job, body string) messages.ConfigView {
	t.Helper()
	r := h.set(t, job, body)
	if r.code != "" {
		t.Fatalf("set %s %s: %s %s", job, body, r.code, r.err)
	}
	return r.view
}

// events returns every message on the config stream's events subjects (not the heads)
// in order, decoded, with its headers.
func (h *harness) events(t *testing.T) ([]messages.ConfigEvent, []*jetstream.RawStreamMsg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := h.res.Config.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var evs []messages.ConfigEvent
	var raws []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := h.res.Config.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		if _, head, _ := h.subj.ParseConfigEvents(m.Subject); head {
			continue // a head
		}
		var ev messages.ConfigEvent
		if err := messages.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		evs = append(evs, ev)
		raws = append(raws, m)
	}
	return evs, raws
}

// logLines returns the JSON log lines written to b so far.
func logLines(t *testing.T, b *natstest.LogBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace([]byte(b.String())), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %s: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}
