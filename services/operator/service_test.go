package operator_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/operator"
)

func TestStateEndpoint(t *testing.T) {
	e := newEnv(t)
	svc, err := operator.NewService(operator.DefaultConfig(testJob, "counter-1"), e.nc, e.js, e.res, e.logger())
	if err != nil {
		t.Fatal(err)
	}
	r := e.run(svc.Runtime(), svc.Run)
	totals := map[string]messages.KeyTotals{}
	e.publishEvents("counter-1", totals, makeEvents(12, -3, "x", "y", "z")...)
	last := e.publish("counter-1", []byte(`{"key":"x","value":0.5}`))
	waitPosition(t, r.rt, last)

	msg, err := e.nc.Request(e.subj.OperatorState(testJob, "counter-1"), nil, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("error %s: %s", code, msg.Data)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(msg.Data, &raw); err != nil {
		t.Fatalf("reply %s: %v", msg.Data, err)
	}
	for _, f := range []string{"instance", "position", "keys", "rejected"} {
		if _, ok := raw[f]; !ok || len(raw) != 4 {
			t.Fatalf("reply %s, want exactly the fields instance, position, keys, rejected", msg.Data)
		}
	}
	var st messages.OperatorState
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Instance != "counter-1" || st.Position != last || st.Rejected != 1 {
		t.Fatalf("state %+v, want instance counter-1, position %d, 1 rejected", st, last)
	}
	checkTotals(t, st.Keys, totals)

	// The service is discoverable like every Cairn service.
	info, err := e.nc.Request("$SRV.INFO."+operator.ServiceName, nil, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	var si micro.Info
	if err := json.Unmarshal(info.Data, &si); err != nil {
		t.Fatal(err)
	}
	if si.Version != operator.ServiceVersion || len(si.Endpoints) != 1 || si.Endpoints[0].Subject != e.subj.OperatorState(testJob, "counter-1") {
		t.Fatalf("service info %+v", si)
	}

	// An empty instance answers an empty object, not null.
	r.stop(t)
	svc2, err := operator.NewService(operator.DefaultConfig(testJob, "empty-0"), e.nc, e.js, e.res, e.logger())
	if err != nil {
		t.Fatal(err)
	}
	e.run(svc2.Runtime(), svc2.Run)
	msg, err = e.nc.Request(e.subj.OperatorState(testJob, "empty-0"), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"instance":"empty-0","position":0,"keys":{},"rejected":0}`; string(msg.Data) != want {
		t.Fatalf("reply %s, want %s", msg.Data, want)
	}
}
